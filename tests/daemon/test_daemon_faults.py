"""Regression tests of issue 12's bugs on real parts (local backend, real SQLite, real API):
a retried or refused start gives its nodes back; a full disk neither loses nor wedges anything
(memory never runs ahead of the store; changes get 503 with Retry-After; work resumes once space
returns); an attempt that ended before a crash is recorded, not run again."""

from __future__ import annotations

import http.client
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import Clock
from sqlalchemy import event

from launchers.local import LocalBackend
from orchestrator.backends.contract import Handle, LaunchSpec
from orchestrator.daemon import api
from orchestrator.daemon.client import DaemonClient
from orchestrator.daemon.listener import ApiServer
from orchestrator.daemon.service import Daemon, DaemonConfig
from orchestrator.daemon.spec import JobSpec
from orchestrator.exceptions import StoreUnavailableError
from orchestrator.resources.cluster import load_cluster
from orchestrator.scheduling.job import JobState
from orchestrator.store import Store, sqlite_url

S = JobState
PY = sys.executable


class FullDisk:
    """While on, the SQLite driver answers every write as SQLite does on a full disk
    (``sqlite3.OperationalError: database or disk is full``), below SQLAlchemy and the store.

    (A real ``max_page_count`` cannot stand in: a row that fits a page already allocated to its
    table is still written, so whether a write fails would depend on page fill.)
    """

    WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")

    def __init__(self, store: Store) -> None:
        self.on = False
        self.refusals = 0
        event.listen(store.engine, "before_cursor_execute", self._refuse)

    def _refuse(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if self.on and statement.lstrip().upper().startswith(self.WRITES):
            self.refusals += 1
            raise sqlite3.OperationalError("database or disk is full")

    def set(self, on: bool) -> None:
        self.on = on


def make(tmp_path: Path, backend: LocalBackend | None = None) -> tuple[Daemon, Clock]:
    clock = Clock()
    store = Store(sqlite_url(tmp_path / "orch.db"))
    config = DaemonConfig(grace_s=2.0, retry_backoff_s=1.0)
    backend = backend or LocalBackend(tmp_path)
    return Daemon(store, load_cluster("local"), backend, config, clock=clock), clock


def spec(argv: list[str], **fields: object) -> JobSpec:
    return JobSpec.from_mapping({"argv": argv, "nodes": 1, **fields})


def state(daemon: Daemon, job_id: int) -> JobState:
    return JobState(daemon.store.get_job(job_id)["state"])


def run_until(daemon: Daemon, clock: Clock, done: Any, timeout: float = 20.0) -> None:
    """Tick, moving the clock 0.5 s a tick (retry backoffs pass), until ``done()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        daemon.tick(clock())
        if done():
            return
        clock.t += 0.5
        time.sleep(0.02)
    raise AssertionError({r["id"]: (r["state"], r["reason"]) for r in daemon.store.list_jobs()})


def test_retried_failure_gives_its_nodes_back(tmp_path: Path) -> None:
    """Bug 1: `--retries 1 -- false` then `-- true` on the whole cluster: both stayed PENDING
    for ever while every node was free."""
    daemon, clock = make(tmp_path)
    (failing,) = daemon.submit([spec(["false"], nodes=4, retries=1)])[0]
    (after,) = daemon.submit([spec(["true"], nodes=4)])[0]
    run_until(daemon, clock, lambda: all(state(daemon, j).is_finished for j in (failing, after)))
    row = daemon.store.get_job(failing)
    assert (row["state"], row["attempts"]) == ("FAILED", 2)
    assert state(daemon, after) is S.COMPLETED
    assert daemon.free.all() and daemon.store.held_nodes(daemon.cluster_id) == {}


def test_refused_start_with_retries_gives_its_nodes_back(tmp_path: Path) -> None:
    """Bug 1's twin in start_job: a start the backend refuses (missing working folder), retried."""
    daemon, clock = make(tmp_path)
    (refused,) = daemon.submit([spec(["true"], nodes=4, retries=1, workdir="/nonexistent/x")])[0]
    (after,) = daemon.submit([spec(["true"], nodes=4)])[0]
    run_until(daemon, clock, lambda: all(state(daemon, j).is_finished for j in (refused, after)))
    assert state(daemon, refused) is S.FAILED
    assert state(daemon, after) is S.COMPLETED
    assert daemon.free.all()


def test_full_disk_keeps_memory_equal_to_the_store_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Bug 2: with the disk full, a job that ended was dropped from memory but stayed RUNNING
    in the store with its nodes held, even after space returned."""
    daemon, clock = make(tmp_path)
    full = FullDisk(daemon.store)
    go = tmp_path / "go"
    wait_for_go = f"import os,time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.02)"
    (job,) = daemon.submit([spec([PY, "-c", wait_for_go], nodes=4)])[0]
    daemon.tick(clock())
    assert state(daemon, job) is S.RUNNING
    full.set(True)
    go.touch()
    time.sleep(0.5)  # the task ends while nothing can be written
    for _ in range(5):
        daemon.tick(clock())
        time.sleep(0.05)
    assert daemon.store_fault == "database or disk is full"
    refused = [r for r in caplog.records if "disk is full" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelname == "ERROR"  # once, not once per tick
    assert state(daemon, job) is S.RUNNING and job in daemon.active  # memory = store
    assert list(daemon.store.held_nodes(daemon.cluster_id)) == [job]
    with pytest.raises(StoreUnavailableError, match="disk is full"):
        daemon.submit([spec(["true"])])
    assert [r["id"] for r in daemon.store.list_jobs()] == [job]
    full.set(False)
    (after,) = daemon.submit([spec(["true"], nodes=4)])[0]
    run_until(daemon, clock, lambda: state(daemon, after).is_finished)
    assert state(daemon, job) is S.COMPLETED and state(daemon, after) is S.COMPLETED
    assert daemon.store_fault is None
    assert any("takes writes again" in r.getMessage() for r in caplog.records)
    assert daemon.free.all() and daemon.store.held_nodes(daemon.cluster_id) == {}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Daemon, FullDisk, ApiServer]]:
    daemon, _ = make(tmp_path)
    daemon.clock = time.time
    server = ApiServer(daemon, "secret")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield daemon, FullDisk(daemon.store), server
    server.shutdown()
    server.server_close()


def test_full_disk_answers_changes_503_with_retry_after_and_reads_go_on(
    served: tuple[Daemon, FullDisk, ApiServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon, full, server = served
    monkeypatch.setattr(api, "STORE_RETRY_AFTER_S", 1)  # the client waits what it is told
    host, port = server.server_address[:2]
    full.set(True)
    conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
    body = json.dumps({"argv": ["true"], "nodes": 1})
    headers = {"Authorization": "Bearer secret", "Content-Type": "application/json"}
    conn.request("POST", "/api/v1/jobs", body, headers)
    response = conn.getresponse()
    error = json.loads(response.read())["error"]
    assert response.status == 503
    assert response.getheader("Retry-After") == "1"
    assert error["code"] == "store_unavailable"
    assert "database or disk is full" in error["message"]
    conn.request("GET", "/api/v1/jobs")
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["jobs"] == []
    conn.request("GET", "/api/v1/health")
    health = json.loads(conn.getresponse().read())
    assert health["status"] == "degraded" and health["store_fault"] == daemon.store_fault
    conn.close()
    # The client honours Retry-After: it succeeds once the disk has room again.
    client = DaemonClient(server.url, "secret")
    refused = full.refusals

    def room_after_the_next_refusal() -> None:
        # Not on a timer: on a loaded machine the first try may come after it (no 503 then).
        while full.refusals == refused:
            time.sleep(0.01)
        time.sleep(0.2)
        full.set(False)

    threading.Thread(target=room_after_the_next_refusal, daemon=True).start()
    t0 = time.monotonic()
    (job,) = client.submit({"argv": ["true"], "nodes": 1}, key="k1")
    assert time.monotonic() - t0 >= 0.9  # one 503, one Retry-After wait, then stored
    assert client.job(job)["state"] in ("PENDING", "STARTING", "RUNNING", "COMPLETED")
    client.close()


class CrashAfterLaunch(LocalBackend):
    """Launches the tasks, then 'dies' before the daemon records the attempt RUNNING."""

    def start(self, spec: LaunchSpec) -> Handle:
        handle = super().start(spec)
        raise KeyboardInterrupt(f"killed after launching {handle['tasks']}")


def test_attempt_that_ended_before_a_crash_is_recorded_not_rerun(tmp_path: Path) -> None:
    """Bug 3: recovery marked such an attempt NODE_FAIL without reading the tasks' statuses,
    and the retry ran work again that had succeeded."""
    marker = tmp_path / "runs"
    program = f"open({str(marker)!r}, 'a').write('ran\\n')"
    daemon, clock = make(tmp_path, CrashAfterLaunch(tmp_path, spawner=False))
    (job,) = daemon.submit([spec([PY, "-c", program], nodes=2, tasks_per_node=1, retries=2)])[0]
    with pytest.raises(KeyboardInterrupt):
        daemon.tick(clock())
    assert state(daemon, job) is S.STARTING
    rc_files = [tmp_path / "jobs" / str(job) / "attempt-1" / f"task-{r}.rc" for r in (0, 1)]
    deadline = time.monotonic() + 20
    while not all(p.exists() for p in rc_files) and time.monotonic() < deadline:
        time.sleep(0.02)
    restarted, _ = make(tmp_path)
    counts = restarted.recover(clock())
    assert counts["ended"] == 1 and counts["aborted"] == 0
    row = restarted.store.get_job(job)
    assert (row["state"], row["attempts"], row["exit_code"]) == ("COMPLETED", 1, 0)
    for _ in range(5):
        restarted.tick(clock())
        clock.t += 1
    assert marker.read_text() == "ran\nran\n"  # two tasks, one attempt: nothing ran again
    assert restarted.free.all() and restarted.store.held_nodes(restarted.cluster_id) == {}


def test_attempt_that_failed_before_a_crash_is_failed_and_retried(tmp_path: Path) -> None:
    daemon, clock = make(tmp_path, CrashAfterLaunch(tmp_path, spawner=False))
    (job,) = daemon.submit([spec([PY, "-c", "raise SystemExit(7)"], retries=1)])[0]
    with pytest.raises(KeyboardInterrupt):
        daemon.tick(clock())
    rc = tmp_path / "jobs" / str(job) / "attempt-1" / "task-0.rc"
    deadline = time.monotonic() + 20
    while not rc.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    restarted, _ = make(tmp_path)
    restarted.recover(clock())
    events = [(e["new_state"], e["reason"]) for e in restarted.store.events_of(job)]
    assert events[3][0] == "FAILED" and "status 7" in events[3][1]
    assert events[4][0] == "PENDING"  # the retry policy applies as to any failure
    run_until(restarted, clock, lambda: state(restarted, job).is_finished)
    assert restarted.store.get_job(job)["attempts"] == 2
