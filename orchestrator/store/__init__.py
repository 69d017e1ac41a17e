"""The job store: schema, alembic migrations and the :class:`Store` the daemon writes through."""

from __future__ import annotations

from orchestrator.store.store import MIGRATIONS, Store, sqlite_url

__all__ = ["MIGRATIONS", "Store", "sqlite_url"]
