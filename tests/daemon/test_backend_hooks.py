"""The optional hooks of the backend contract, as the daemon uses them: nodes a backend
cannot give (down, other users'), an engine's requeue, the backend registry and close()."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from launchers.local import LocalBackend
from orchestrator.backends import make_backend, parse_backend_options
from orchestrator.backends.contract import Handle, Liveness, PollResult
from orchestrator.daemon.service import Daemon, DaemonConfig
from orchestrator.daemon.spec import JobSpec
from orchestrator.exceptions import BackendError, InvalidRequestError
from orchestrator.resources.cluster import load_cluster
from orchestrator.scheduling.job import JobState
from orchestrator.store import Store, sqlite_url

S = JobState


class HookedLocal(LocalBackend):
    """The local backend with nodes taken away and one requeue, as an engine would report
    them (the processes are real; only the engine's verdict is set by the test)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.down: frozenset[str] = frozenset()
        self.requeue_once: set[int] = set()
        self.closed = False

    def unavailable_nodes(self) -> frozenset[str]:
        return self.down

    def poll(self, handles: Mapping[int, Handle]) -> dict[int, PollResult]:
        results = super().poll(handles)
        for job_id in list(self.requeue_once):
            if job_id in results:
                self.requeue_once.discard(job_id)
                self.signal(handles[job_id], 9)
                results[job_id] = PollResult(Liveness.REQUEUE)
        return results

    def close(self) -> None:
        self.closed = True


def make(tmp_path: Path) -> tuple[Daemon, HookedLocal]:
    backend = HookedLocal(tmp_path)
    store = Store(sqlite_url(tmp_path / "orch.db"))
    daemon = Daemon(store, load_cluster("local"), backend, DaemonConfig(grace_s=1.0))
    return daemon, backend


def run_until(daemon: Daemon, done: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        daemon.tick(time.time())
        if done():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_unavailable_nodes_are_never_given(tmp_path: Path) -> None:
    daemon, backend = make(tmp_path)
    names = daemon.cluster.topology.node_names
    backend.down = frozenset(names[:-1])  # only the last node can be given
    argv = [sys.executable, "-c", "pass"]
    ids = [
        daemon.submit([JobSpec.from_mapping({"argv": argv, "nodes": 1})])[0][0] for _ in range(3)
    ]
    run_until(
        daemon, lambda: all(JobState(daemon.store.get_job(j)["state"]).is_finished for j in ids)
    )
    events = [e for j in ids for e in daemon.store.events_of(j) if "running on" in str(e["reason"])]
    assert len(events) == 3
    assert all(str(e["reason"]).endswith(names[-1]) for e in events)
    # A job wider than what is available waits with the reason the scheduler gives.
    wide = daemon.submit([JobSpec.from_mapping({"argv": argv, "nodes": 2})])[0][0]
    daemon.tick(time.time())
    assert JobState(daemon.store.get_job(wide)["state"]) is S.PENDING
    backend.down = frozenset()
    run_until(daemon, lambda: JobState(daemon.store.get_job(wide)["state"]) is S.COMPLETED)


def test_engine_requeue_runs_again_without_spending_a_retry(tmp_path: Path) -> None:
    daemon, backend = make(tmp_path)
    marker = tmp_path / "runs.txt"
    code = f"open({str(marker)!r}, 'a').write('x'); import time; time.sleep(0.3)"
    job_id = daemon.submit(
        [JobSpec.from_mapping({"argv": [sys.executable, "-c", code], "nodes": 1})]
    )[0][0]
    backend.requeue_once.add(job_id)
    run_until(daemon, lambda: JobState(daemon.store.get_job(job_id)["state"]).is_finished)
    row = daemon.store.get_job(job_id)
    assert row["state"] == "COMPLETED"  # retries=0, yet the requeue ran it again
    assert row["attempts"] == 2
    states = [e["new_state"] for e in daemon.store.events_of(job_id)]
    assert "PREEMPTED" in states and states.count("RUNNING") == 2
    daemon.stop()
    assert backend.closed


def test_registry_builds_by_name_and_refuses_bad_names(tmp_path: Path) -> None:
    cluster = load_cluster("local")
    assert isinstance(make_backend("local", tmp_path, cluster), LocalBackend)
    with pytest.raises(InvalidRequestError, match="backend"):
        make_backend("lsf", tmp_path, cluster)
    with pytest.raises(InvalidRequestError, match="inherit_env"):
        make_backend("local", tmp_path, cluster, {"colour": "red"})
    assert parse_backend_options(["mode=pilot", "nodes=4"]) == {"mode": "pilot", "nodes": "4"}
    with pytest.raises(InvalidRequestError, match="KEY=VALUE"):
        parse_backend_options(["pilot"])


class UnansweringPoll(LocalBackend):
    """A backend whose poll raises, as PJM's does when pjstat fails, while its node query (no
    command of the engine's) answers."""

    answering = True

    def poll(self, handles: Mapping[int, Handle]) -> dict[int, PollResult]:
        if not self.answering:
            raise BackendError("pjstat: connection refused")
        return super().poll(handles)


def test_an_engine_fault_holds_until_the_call_that_failed_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The node query's success must not clear the poll's failure: the fault was logged as
    # cleared and raised again at every tick, and the daemon said the engine answered.
    backend = UnansweringPoll(tmp_path)
    daemon = Daemon(Store(sqlite_url(tmp_path / "orch.db")), load_cluster("local"), backend)
    spec = JobSpec.from_mapping({"argv": [sys.executable, "-c", "import time; time.sleep(5)"],
                                 "nodes": 1})  # fmt: skip
    (job,) = daemon.submit([spec])[0]
    daemon.tick(time.time())
    backend.answering = False
    caplog.set_level("INFO", logger="orchestrator.daemon")
    faults = []
    for _ in range(4):
        daemon.tick(time.time())
        daemon.wake.set()  # a scheduling pass (the node query) every tick
        faults.append(daemon.engine_fault)
    assert faults == ["pjstat: connection refused"] * 4
    said = [r.getMessage() for r in caplog.records if "engine" in r.getMessage()]
    assert said == ["the local engine does not answer: pjstat: connection refused"]
    backend.answering = True
    daemon.tick(time.time())
    assert daemon.engine_fault is None
    daemon.cancel(job)
