"""Accounting: what the attempt that ended a job used (issue 17, ``orch history``).

Jobs get ``cpu_time_s`` (CPU seconds summed over the tasks), ``max_rss_mb`` (the largest peak
resident set of a task, MB of 2**20 bytes) and ``task_usage`` (per rank, ``{"cpu_s": ...,
"max_rss_mb": ...}`` or null), all NULL for the jobs stored before this revision: their usage is
not known.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (see 0003: a batch copy of jobs fails on SQLite's foreign keys).
    op.add_column("jobs", sa.Column("cpu_time_s", sa.Float, nullable=True))
    op.add_column("jobs", sa.Column("max_rss_mb", sa.Float, nullable=True))
    op.add_column("jobs", sa.Column("task_usage", sa.JSON, nullable=True))


def downgrade() -> None:
    # Plain DROP COLUMNs (see upgrade).
    for column in ("task_usage", "max_rss_mb", "cpu_time_s"):
        op.drop_column("jobs", column)
