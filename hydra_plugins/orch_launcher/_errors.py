"""Errors a user can fix, printed by Hydra as their message alone.

Hydra prints an exception raised by a launcher or sweeper with its whole traceback (some 40
lines of Hydra's own frames) unless it is a ``CompactHydraException``. Our errors already name
the setting, the value and a valid example, so the message is what the user needs; the original
stays chained for ``HYDRA_FULL_ERROR=1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from hydra.errors import CompactHydraException

from orchestrator.exceptions import OrchestratorError

__all__ = ["OrchSweepError", "compact_errors"]


class OrchSweepError(CompactHydraException):
    """An :class:`OrchestratorError` raised while launching or sweeping, as Hydra prints it."""


@contextmanager
def compact_errors() -> Iterator[None]:
    """Re-raise any :class:`OrchestratorError` as an :class:`OrchSweepError` (chained)."""
    try:
        yield
    except OrchestratorError as e:
        raise OrchSweepError(f"{type(e).__name__}: {e}") from e
