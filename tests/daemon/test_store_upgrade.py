"""A store written by an older daemon, with jobs in it, upgrades to the newest schema with every
row kept (migrations 0003 and 0004 once recreated the jobs table on SQLite, whose DROP TABLE
failed on the foreign keys of the rows that referenced it: the demo's second run could not open
its store)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text

from orchestrator.store import Store, sqlite_url
from orchestrator.store.store import MIGRATIONS, _sqlite_pragmas


def test_a_store_of_revision_0002_with_jobs_upgrades_keeping_them(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "orch.db")
    engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_pragmas)  # foreign keys on, as the daemon has them
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
        conn.execute(
            text(
                "INSERT INTO clusters (id, name, kind, size, spec, created_at) "
                "VALUES (1, 'local', 'flat', 4, '', 0)"
            )
        )
        columns = (
            "id, cluster_id, name, user, account, argv, env, nodes, tasks_per_node, "
            "cpus_per_task, gpus_per_task, mem_per_node_mb, priority, submit_time, "
            "max_retries, attempts, not_before, state, reason"
        )
        conn.execute(
            text(
                f"INSERT INTO jobs ({columns}) VALUES (7, 1, 'old', 'alice', '', '[\"true\"]', "
                "'{}', 1, 1, 1, 0, 0, 0, 0, 0, 1, 0, 'RUNNING', 'running on node0')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO allocations (cluster_id, job_id, attempt, node_index, node_name, "
                "allocated_at) VALUES (1, 7, 1, 0, 'node0', 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO events (job_id, time, old_state, new_state, reason) "
                "VALUES (7, 0, NULL, 'PENDING', 'submitted')"
            )
        )
    engine.dispose()
    store = Store(url)  # migrates to the newest revision
    try:
        row = store.get_job(7)
        assert (row["name"], row["state"], row["gpus_per_node"], row["exclusive"]) == (
            "old",
            "RUNNING",
            0,
            False,
        )
        assert row["partition"] == "" and row["cpu_time_s"] is None
        assert store.held_shares(1) == {7: [(0, None)]}  # the whole node, as before
        assert [e["new_state"] for e in store.events_of(7)] == ["PENDING"]
        assert store.schema_diff() == []
    finally:
        store.close()


def test_a_store_with_jobs_downgrades_to_0002_keeping_them(tmp_path: Path) -> None:
    """Going back to an older daemon's schema: the downgrades of 0004 and 0003 once recreated
    the jobs table (a batch copy), which SQLite refused with rows referencing it."""
    url = sqlite_url(tmp_path / "orch.db")
    test_a_store_of_revision_0002_with_jobs_upgrades_keeping_them(tmp_path)
    engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_pragmas)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0002")
        names = {r[1] for r in conn.execute(text("PRAGMA table_info(jobs)"))}
        assert "cpu_time_s" not in names and "partition" not in names
        assert conn.execute(text("SELECT name, state FROM jobs WHERE id = 7")).one() == (
            "old",
            "RUNNING",
        )
        assert conn.execute(text("SELECT count(*) FROM events WHERE job_id = 7")).scalar() == 1
        assert conn.execute(text("SELECT node_name FROM allocations")).scalar() == "node0"
        command.upgrade(config, "head")  # and forward again
    engine.dispose()
    store = Store(url)
    try:
        assert store.get_job(7)["name"] == "old" and store.schema_diff() == []
    finally:
        store.close()
