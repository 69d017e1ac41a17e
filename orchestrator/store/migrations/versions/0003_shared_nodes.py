"""Shared nodes: GPUs per node, whole nodes asked, the partition; the share of a node held.

Jobs get ``gpus_per_node``, ``exclusive`` and ``partition``; allocations get ``cpus``, ``gpus``
and ``mem_mb`` (NULL: the whole node, as every row stored before this revision). The unique
index that refuses a node to two jobs now covers the whole-node rows only: on a cluster that
shares nodes, several jobs hold parts of one node.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_HELD = "released_at IS NULL"


def upgrade() -> None:
    # Plain ADD COLUMNs, never a batch copy: on SQLite a batch recreates the table, and dropping
    # the old jobs table fails on the foreign keys of the rows that reference it.
    op.add_column(
        "jobs", sa.Column("gpus_per_node", sa.Integer, nullable=False, server_default="0")
    )
    op.add_column(
        "jobs", sa.Column("exclusive", sa.Boolean, nullable=False, server_default=sa.false())
    )
    op.add_column("jobs", sa.Column("partition", sa.String(128), nullable=False, server_default=""))
    op.drop_index("ux_allocations_held_node", table_name="allocations")
    op.add_column("allocations", sa.Column("cpus", sa.Text, nullable=True))
    op.add_column("allocations", sa.Column("gpus", sa.Text, nullable=True))
    op.add_column("allocations", sa.Column("mem_mb", sa.Integer, nullable=True))
    _held_node_index(f"{_HELD} AND cpus IS NULL")


def downgrade() -> None:
    # Plain DROP COLUMNs (SQLite >= 3.35 has them), for the same reason as the upgrade.
    op.drop_index("ux_allocations_held_node", table_name="allocations")
    for column in ("mem_mb", "gpus", "cpus"):
        op.drop_column("allocations", column)
    _held_node_index(_HELD)
    for column in ("partition", "exclusive", "gpus_per_node"):
        op.drop_column("jobs", column)


def _held_node_index(where: str) -> None:
    """The unique index that refuses a node to two jobs, over the rows ``where`` says."""
    condition = sa.text(where)
    op.create_index(
        "ux_allocations_held_node",
        "allocations",
        ["cluster_id", "node_index"],
        unique=True,
        sqlite_where=condition,
        postgresql_where=condition,
    )
