"""The store on SQLite (WAL) and on a real PostgreSQL: migrations match the schema, the event
log replays to the state, the database refuses a node held twice, a daemon runs jobs on both."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from daemon_helpers import PostgresServer
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from launchers.local import LocalBackend
from orchestrator.daemon.service import Daemon, DaemonConfig
from orchestrator.daemon.spec import JobSpec
from orchestrator.exceptions import IllegalTransitionError
from orchestrator.resources.cluster import load_cluster
from orchestrator.scheduling.job import JobState
from orchestrator.store import Store, sqlite_url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return Store(sqlite_url(tmp_path / "orch.db"))
    server: PostgresServer = request.getfixturevalue("postgres")
    s = Store(server.url)
    with s.engine.begin() as conn:  # a clean database per test
        conn.execute(
            text(
                "DROP TABLE IF EXISTS events, allocations, jobs, clusters, alembic_version CASCADE"
            )
        )
    s.migrate()
    return s


def test_migration_matches_the_schema_and_is_idempotent(store: Store) -> None:
    assert store.schema_diff() == []
    store.migrate()
    assert store.schema_diff() == []
    if store.engine.dialect.name == "sqlite":
        with store.engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_daemon_runs_jobs_and_the_log_replays(store: Store, tmp_path: Path) -> None:
    daemon = Daemon(store, load_cluster("local"), LocalBackend(tmp_path), DaemonConfig())
    ok = daemon.submit([JobSpec.from_mapping({"argv": ["true"], "nodes": 2})])[0][0]
    bad = daemon.submit([JobSpec.from_mapping({"argv": ["false"], "nodes": 2, "retries": 1})])[0][0]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        daemon.tick(time.time())
        if all(JobState(store.get_job(j)["state"]).is_finished for j in (ok, bad)):
            break
        time.sleep(0.05)
    assert store.get_job(ok)["state"] == "COMPLETED"
    assert store.get_job(bad)["state"] == "FAILED" and store.get_job(bad)["attempts"] == 2
    assert store.replay_states() == {ok: JobState.COMPLETED, bad: JobState.FAILED}
    assert store.held_nodes(daemon.cluster_id) == {}
    with pytest.raises(IllegalTransitionError), store.write() as conn:
        store.transition(conn, ok, JobState.COMPLETED, JobState.RUNNING, "no", 0.0)
    with pytest.raises(IllegalTransitionError), store.write() as conn:
        store.transition(conn, ok, JobState.RUNNING, JobState.COMPLETED, "stale", 0.0)
    # Refused transitions left no event behind.
    assert [e["new_state"] for e in store.events_of(ok)][-1] == "COMPLETED"
    cid = daemon.cluster_id
    with store.write() as conn:
        store.allocate(conn, cid, ok, 9, [0, 1], ["node0", "node1"], 0.0)
    with pytest.raises(IntegrityError), store.write() as conn:
        store.allocate(conn, cid, bad, 9, [1], ["node1"], 0.0)
    assert store.held_nodes(cid) == {ok: [0, 1]}


def test_postgres_daemon_process(postgres: PostgresServer, tmp_path: Path) -> None:
    """A daemon process on PostgreSQL, killed and restarted, keeps its jobs (a kill while the
    job is STARTING fails that attempt as NODE_FAIL: the retries cover it)."""
    import signal

    from daemon_helpers import start_daemon, stop_daemon

    Store(postgres.url).close()
    root = tmp_path / "pg-daemon"
    daemon = start_daemon(root, "--nodes", "2", "--store", postgres.url)
    client = daemon.client()
    (job,) = client.submit(
        {"argv": [sys.executable, "-c", "import time; time.sleep(1)"], "nodes": 2, "retries": 2}
    )
    assert client.health()["store"] == "postgresql"
    daemon.kill(signal.SIGKILL)
    daemon = start_daemon(root, "--nodes", "2", "--store", postgres.url)
    client = daemon.client()
    doc = client.wait(job, 30)
    assert doc["state"] == "COMPLETED", doc["events"]
    assert not (root / "orch.db").exists()
    stop_daemon(daemon)
