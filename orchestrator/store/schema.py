"""The job store's tables (SQLAlchemy Core).

* ``clusters``: the pools a daemon schedules (name, topology kind, size, preset text).
* ``jobs``: one row per job (an array element is a job). ``state`` is a cache of the last event's
  ``new_state``, kept in the same transaction; :meth:`Store.replay_states` recomputes it from
  ``events`` alone.
* ``allocations``: one row per node per attempt, with the cores, GPUs and memory held on a
  cluster that shares nodes. A partial unique index over the whole-node rows not yet released
  makes the database itself refuse to give a node to two jobs.
* ``events``: the append-only log of state transitions (time, old state, new state, reason).

The migrations (``0001_initial``, ``0002_idempotency_fingerprint``, ``0003_shared_nodes``, then
``0004_task_usage``) create exactly these tables; a test compares the two.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    false,
)

__all__ = ["allocations", "clusters", "events", "jobs", "metadata"]

metadata = MetaData()

clusters = Table(
    "clusters",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("size", Integer, nullable=False),
    Column("spec", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("cluster_id", Integer, ForeignKey("clusters.id"), nullable=False),
    Column("name", String(256), nullable=False, default=""),
    Column("user", String(128), nullable=False),
    Column("account", String(128), nullable=False, default=""),
    Column("argv", JSON, nullable=True),
    Column("script", Text, nullable=True),
    Column("env", JSON, nullable=False),
    Column("workdir", Text, nullable=True),
    Column("nodes", Integer, nullable=True),
    Column("shape", String(64), nullable=True),
    Column("tasks_per_node", Integer, nullable=False),
    Column("cpus_per_task", Integer, nullable=False),
    Column("gpus_per_task", Integer, nullable=False),
    Column("mem_per_node_mb", Integer, nullable=False),
    Column("gpus_per_node", Integer, nullable=False, server_default="0"),
    Column("exclusive", Boolean, nullable=False, server_default=false()),
    Column("partition", String(128), nullable=False, server_default=""),
    Column("walltime_s", Float, nullable=True),
    Column("estimate_s", Float, nullable=True),
    Column("priority", Integer, nullable=False),
    Column("submit_time", Float, nullable=False),
    Column("array_id", Integer, nullable=True),
    Column("array_index", Integer, nullable=True),
    Column("array_limit", Integer, nullable=True),
    Column("dependency", Text, nullable=True),
    Column("max_retries", Integer, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("not_before", Float, nullable=False, default=0.0),
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Column("exit_code", Integer, nullable=True),
    Column("start_time", Float, nullable=True),
    Column("end_time", Float, nullable=True),
    Column("handle", JSON, nullable=True),
    # What the attempt that ended the job used, as its tasks' supervisors had it from the
    # kernel: CPU seconds summed over tasks, the largest peak RSS of a task (MB, 2**20 bytes),
    # and per rank {"cpu_s", "max_rss_mb"} (null: unknown). NULL: not known (stored before
    # migration 0004, or no task left a record of it).
    Column("cpu_time_s", Float, nullable=True),
    Column("max_rss_mb", Float, nullable=True),
    Column("task_usage", JSON, nullable=True),
    Column("idempotency_key", String(128), nullable=True, unique=True),
    # SHA-256 (hex) of the request the key came with: the same key with another request is a 409.
    Column("idempotency_fingerprint", String(64), nullable=True),
    Index("ix_jobs_state", "state"),
    Index("ix_jobs_user", "user"),
    Index("ix_jobs_array_id", "array_id"),
)

allocations = Table(
    "allocations",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("cluster_id", Integer, ForeignKey("clusters.id"), nullable=False),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("node_index", Integer, nullable=False),
    Column("node_name", String(128), nullable=False),
    Column("allocated_at", Float, nullable=False),
    Column("released_at", Float, nullable=True),
    # On a cluster that shares nodes, what the job holds of the node ("0,1,2" indices; NULL:
    # the whole node, as on whole-node clusters).
    Column("cpus", Text, nullable=True),
    Column("gpus", Text, nullable=True),
    Column("mem_mb", Integer, nullable=True),
    Index("ix_allocations_job", "job_id"),
    # The invariant "no node is ever given to two jobs", enforced by the database for whole
    # nodes (a share of a node, cpus not NULL, is checked core by core by the daemon).
    Index(
        "ux_allocations_held_node",
        "cluster_id",
        "node_index",
        unique=True,
        sqlite_where=and_(Column("released_at").is_(None), Column("cpus").is_(None)),
        postgresql_where=and_(Column("released_at").is_(None), Column("cpus").is_(None)),
    ),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("job_id", Integer, ForeignKey("jobs.id"), nullable=False),
    Column("time", Float, nullable=False),
    Column("old_state", String(16), nullable=True),
    Column("new_state", String(16), nullable=False),
    Column("reason", Text, nullable=False, default=""),
    Index("ix_events_job", "job_id", "id"),
)
