"""Initial schema: clusters, jobs, allocations, events.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clusters",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("cluster_id", sa.Integer, sa.ForeignKey("clusters.id"), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("user", sa.String(128), nullable=False),
        sa.Column("account", sa.String(128), nullable=False),
        sa.Column("argv", sa.JSON, nullable=True),
        sa.Column("script", sa.Text, nullable=True),
        sa.Column("env", sa.JSON, nullable=False),
        sa.Column("workdir", sa.Text, nullable=True),
        sa.Column("nodes", sa.Integer, nullable=True),
        sa.Column("shape", sa.String(64), nullable=True),
        sa.Column("tasks_per_node", sa.Integer, nullable=False),
        sa.Column("cpus_per_task", sa.Integer, nullable=False),
        sa.Column("gpus_per_task", sa.Integer, nullable=False),
        sa.Column("mem_per_node_mb", sa.Integer, nullable=False),
        sa.Column("walltime_s", sa.Float, nullable=True),
        sa.Column("estimate_s", sa.Float, nullable=True),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("submit_time", sa.Float, nullable=False),
        sa.Column("array_id", sa.Integer, nullable=True),
        sa.Column("array_index", sa.Integer, nullable=True),
        sa.Column("array_limit", sa.Integer, nullable=True),
        sa.Column("dependency", sa.Text, nullable=True),
        sa.Column("max_retries", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("not_before", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("start_time", sa.Float, nullable=True),
        sa.Column("end_time", sa.Float, nullable=True),
        sa.Column("handle", sa.JSON, nullable=True),
        sa.Column("idempotency_key", sa.String(128), nullable=True, unique=True),
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_index("ix_jobs_user", "jobs", ["user"])
    op.create_index("ix_jobs_array_id", "jobs", ["array_id"])
    op.create_table(
        "allocations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("cluster_id", sa.Integer, sa.ForeignKey("clusters.id"), nullable=False),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("node_index", sa.Integer, nullable=False),
        sa.Column("node_name", sa.String(128), nullable=False),
        sa.Column("allocated_at", sa.Float, nullable=False),
        sa.Column("released_at", sa.Float, nullable=True),
    )
    op.create_index("ix_allocations_job", "allocations", ["job_id"])
    op.create_index(
        "ux_allocations_held_node",
        "allocations",
        ["cluster_id", "node_index"],
        unique=True,
        sqlite_where=sa.text("released_at IS NULL"),
        postgresql_where=sa.text("released_at IS NULL"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("old_state", sa.String(16), nullable=True),
        sa.Column("new_state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("ix_events_job", "events", ["job_id", "id"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("allocations")
    op.drop_table("jobs")
    op.drop_table("clusters")
