"""The steppable tick with an injected clock: lifecycle, walltime, retries, arrays,
dependencies, limits, hold/release, cancel, idempotency and in-process recovery."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from daemon_helpers import Clock
from sqlalchemy.exc import IntegrityError

from launchers.local import LocalBackend
from orchestrator.daemon.service import Daemon, DaemonConfig
from orchestrator.daemon.spec import JobSpec
from orchestrator.exceptions import (
    IllegalTransitionError,
    InvalidRequestError,
    JobStateError,
)
from orchestrator.resources.cluster import load_cluster
from orchestrator.scheduling.job import ALLOWED, JobState, check_transition
from orchestrator.store import Store, sqlite_url

S = JobState
PY = sys.executable


def make(tmp_path: Path, **config: object) -> tuple[Daemon, Clock]:
    clock = Clock()
    store = Store(sqlite_url(tmp_path / "orch.db"))
    cfg = DaemonConfig(grace_s=2.0, retry_backoff_s=1.0, **config)  # type: ignore[arg-type]
    daemon = Daemon(store, load_cluster("local"), LocalBackend(tmp_path), cfg, clock=clock)
    return daemon, clock


def spec(argv: list[str], **fields: object) -> JobSpec:
    return JobSpec.from_mapping({"argv": argv, "nodes": 1, **fields})


def state(daemon: Daemon, job_id: int) -> JobState:
    return JobState(daemon.store.get_job(job_id)["state"])


def settle(daemon: Daemon, clock: Clock, job_ids: list[int], timeout: float = 20.0) -> None:
    """Tick (at the injected time) until the jobs have ended and their nodes are free."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        daemon.tick(clock())
        if all(state(daemon, j).is_finished for j in job_ids) and not daemon.draining:
            return
        time.sleep(0.02)
    raise AssertionError({j: state(daemon, j) for j in job_ids})


def test_transition_table_is_closed_and_enforced() -> None:
    for old, targets in ALLOWED.items():
        for new in S:
            if new in targets:
                check_transition(old, new)
            else:
                with pytest.raises(IllegalTransitionError):
                    check_transition(old, new)
    # Every state is reachable from submission.
    seen, frontier = set(), [None]
    while frontier:
        for new in ALLOWED[frontier.pop()]:
            if new not in seen:
                seen.add(new)
                frontier.append(new)
    assert seen == set(S)
    assert {s for s in S if s.is_finished and ALLOWED[s] - {S.PENDING}} == set()


def test_submit_run_complete_events_replay_to_state(tmp_path: Path) -> None:
    daemon, clock = make(tmp_path)
    (job,) = daemon.submit([spec(["true"])])[0]
    assert state(daemon, job) is S.PENDING
    daemon.tick(clock())
    assert state(daemon, job) is S.RUNNING
    settle(daemon, clock, [job])
    events = [(e["old_state"], e["new_state"]) for e in daemon.store.events_of(job)]
    assert events == [
        (None, "PENDING"),
        ("PENDING", "STARTING"),
        ("STARTING", "RUNNING"),
        ("RUNNING", "COMPLETED"),
    ]
    assert daemon.store.replay_states() == {job: S.COMPLETED}
    assert daemon.store.held_nodes(daemon.cluster_id) == {}
    assert daemon.free.all()


def test_walltime_sigterm_then_sigkill_after_grace(tmp_path: Path) -> None:
    daemon, clock = make(tmp_path)
    # Ignores SIGTERM: only SIGKILL after the grace period ends it.
    stubborn = [
        PY,
        "-c",
        "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        "print('up', flush=True); time.sleep(60)",
    ]
    (job,) = daemon.submit([spec(stubborn, time=5)])[0]
    daemon.tick(clock())
    out = Path(daemon.backend.output_paths(job)[0])  # type: ignore[index]
    deadline = time.monotonic() + 10
    while b"up" not in out.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.02)
    clock.t += 4.9
    daemon.tick(clock())
    assert state(daemon, job) is S.RUNNING
    clock.t += 0.2
    daemon.tick(clock())
    assert state(daemon, job) is S.TIMEOUT
    assert job in daemon.draining and not daemon.free[0]
    clock.t += 1.0  # inside the grace period: SIGTERM was ignored, still holding its node
    time.sleep(0.3)
    daemon.tick(clock())
    assert job in daemon.draining
    clock.t += 1.5  # past the grace: SIGKILL
    settle(daemon, clock, [job])
    assert daemon.free.all()
    assert daemon.store.held_nodes(daemon.cluster_id) == {}
    reasons = [e["reason"] for e in daemon.store.events_of(job)]
    assert "walltime 5s reached" in reasons[-1]


def test_retries_with_backoff_then_failed(tmp_path: Path) -> None:
    daemon, clock = make(tmp_path)
    (job,) = daemon.submit([spec(["false"], retries=2)])[0]
    starts = []
    deadline = time.monotonic() + 20
    while not state(daemon, job).is_finished and time.monotonic() < deadline:
        before = daemon.store.get_job(job)["attempts"]
        daemon.tick(clock())
        if daemon.store.get_job(job)["attempts"] > before:
            starts.append(clock.t)
        clock.t += 0.25
        time.sleep(0.02)
    row = daemon.store.get_job(job)
    assert row["state"] == "FAILED" and row["attempts"] == 3 and row["exit_code"] == 1
    assert len(starts) == 3
    events = daemon.store.events_of(job)
    failures = [e["time"] for e in events if e["new_state"] == "FAILED"]
    restarts = [e["time"] for e in events if e["new_state"] == "STARTING"][1:]
    # Backoff doubles (1 s, then 2 s) and the retry starts at the first tick after it ends,
    # not at the next periodic pass.
    for failed, restarted, delay in zip(failures, restarts, (1.0, 2.0), strict=False):
        assert delay <= restarted - failed <= delay + 0.25
    requeues = [e for e in events if e["new_state"] == "PENDING"]
    assert len(requeues) == 3  # the submission and two retries


def test_array_throttle_never_exceeds_limit(tmp_path: Path) -> None:
    daemon, clock = make(tmp_path)
    ids = daemon.submit([spec([PY, "-c", "import time; time.sleep(0.2)"], array="0-5%2")])[0]
    assert len(ids) == 6
    peak = 0
    deadline = time.monotonic() + 30
    while not all(state(daemon, j).is_finished for j in ids) and time.monotonic() < deadline:
        daemon.tick(clock())
        peak = max(peak, sum(1 for j in daemon.active.values() if j.array_id == ids[0]))
        time.sleep(0.02)
    assert peak == 2
    assert all(state(daemon, j) is S.COMPLETED for j in ids)
    envs = [daemon.store.get_job(j)["env"]["ORCH_ARRAY_TASK_ID"] for j in ids]
    assert envs == [str(i) for i in range(6)]


def test_dependencies_afterok_afternotok_afterany(tmp_path: Path) -> None:
    daemon, clock = make(tmp_path)
    (ok,) = daemon.submit([spec(["true"])])[0]
    (bad,) = daemon.submit([spec(["false"])])[0]
    after_ok = daemon.submit([spec(["true"], dependency=f"afterok:{ok}")])[0][0]
    never = daemon.submit([spec(["true"], dependency=f"afterok:{bad}")])[0][0]
    after_not_ok = daemon.submit([spec(["true"], dependency=f"afternotok:{bad}")])[0][0]
    after_any = daemon.submit([spec(["true"], dependency=f"afterany:{ok},afterany:{bad}")])[0][0]
    daemon.tick(clock())
    assert state(daemon, after_ok) is S.PENDING  # not before its dependency ended
    settle(daemon, clock, [ok, bad, after_ok, never, after_not_ok, after_any])
    assert state(daemon, after_ok) is S.COMPLETED
    assert state(daemon, after_not_ok) is S.COMPLETED
    assert state(daemon, after_any) is S.COMPLETED
    assert state(daemon, never) is S.CANCELLED
    assert "never satisfied" in daemon.store.get_job(never)["reason"]
    with pytest.raises(InvalidRequestError) as err:
        daemon.submit([spec(["true"], dependency="afterok:999")])
    assert err.value.field == "dependency"


def test_dependency_on_an_array_waits_for_every_element(tmp_path: Path) -> None:
    daemon, clock = make(tmp_path)
    ids = daemon.submit([spec([PY, "-c", "import time; time.sleep(0.1)"], array="0-3")])[0]
    (after,) = daemon.submit([spec(["true"], dependency=f"afterok:{ids[0]}")])[0]
    assert daemon.store.get_job(after)["dependency"] == ",".join(f"afterok:{i}" for i in ids)
    settle(daemon, clock, [*ids, after])
    last_end = max(daemon.store.get_job(i)["end_time"] for i in ids)
    assert daemon.store.get_job(after)["start_time"] >= last_end


def test_per_user_job_and_node_limits(tmp_path: Path) -> None:
    daemon, clock = make(tmp_path, max_jobs_per_user=1, max_nodes_per_user=2)
    sleep = [PY, "-c", "import time; time.sleep(30)"]
    a1 = daemon.submit([spec(sleep, user="alice")])[0][0]
    a2 = daemon.submit([spec(sleep, user="alice")])[0][0]
    b1 = daemon.submit([spec(sleep, user="bob", nodes=3)])[0][0]
    b2 = daemon.submit([spec(sleep, user="bob", nodes=2)])[0][0]
    daemon.tick(clock())
    assert state(daemon, a1) is S.RUNNING and state(daemon, a2) is S.PENDING
    assert state(daemon, b1) is S.PENDING  # 3 nodes > bob's 2-node limit
    assert state(daemon, b2) is S.RUNNING
    for job in (a1, a2, b1, b2):
        daemon.cancel(job)
    settle(daemon, clock, [a1, a2, b1, b2])


def test_hold_release_cancel(tmp_path: Path) -> None:
    daemon, clock = make(tmp_path)
    (held,) = daemon.submit([spec(["true"], hold=True)])[0]
    (pending,) = daemon.submit([spec(["true"], nodes=4)])[0]
    daemon.hold(pending)
    daemon.tick(clock())
    assert state(daemon, held) is S.HELD and state(daemon, pending) is S.HELD
    with pytest.raises(JobStateError):
        daemon.hold(held)
    daemon.release(held)
    daemon.cancel(pending)
    settle(daemon, clock, [held, pending])
    assert state(daemon, held) is S.COMPLETED and state(daemon, pending) is S.CANCELLED
    with pytest.raises(JobStateError):
        daemon.cancel(pending)
    (running,) = daemon.submit([spec([PY, "-c", "import time; time.sleep(30)"], nodes=4)])[0]
    daemon.tick(clock())
    assert state(daemon, running) is S.RUNNING
    daemon.cancel(running)
    assert state(daemon, running) is S.CANCELLED
    assert not daemon.free.any()  # held until its processes are gone
    settle(daemon, clock, [running])
    assert daemon.free.all()


def test_batch_is_atomic_and_idempotent(tmp_path: Path) -> None:
    daemon, _ = make(tmp_path)
    with pytest.raises(InvalidRequestError) as err:
        daemon.submit([spec(["true"]), spec(["true"], nodes=5)], idempotency_key="k1")
    assert err.value.field == "jobs[1].nodes"
    assert daemon.store.list_jobs() == []
    first = daemon.submit([spec(["true"]), spec(["true"], array="0-2")], idempotency_key="k2")
    again = daemon.submit([spec(["true"]), spec(["true"], array="0-2")], idempotency_key="k2")
    assert first == again and len(first[1]) == 3
    assert len(daemon.store.list_jobs()) == 4


def test_the_database_refuses_a_node_held_twice(tmp_path: Path) -> None:
    daemon, _ = make(tmp_path)
    a, b = (ids[0] for ids in daemon.submit([spec(["true"]), spec(["true"])]))
    with daemon.store.write() as conn:
        daemon.store.allocate(conn, daemon.cluster_id, a, 1, [0], ["node0"], 0.0)
    with pytest.raises(IntegrityError), daemon.store.write() as conn:
        daemon.store.allocate(conn, daemon.cluster_id, b, 1, [0], ["node0"], 0.0)
    with daemon.store.write() as conn:
        daemon.store.release(conn, a, 1.0)
        daemon.store.allocate(conn, daemon.cluster_id, b, 1, [0], ["node0"], 1.0)


def test_recover_reattaches_running_and_fails_starting(tmp_path: Path) -> None:
    daemon, clock = make(tmp_path)
    marker = tmp_path / "done"
    script = f"import time,pathlib; time.sleep(1); pathlib.Path({str(marker)!r}).write_text('x')"
    (running,) = daemon.submit([spec([PY, "-c", script])])[0]
    (starting,) = daemon.submit([spec(["true"], retries=1)])[0]
    daemon.tick(clock())
    # A crash between allocating and launching leaves a job STARTING with nodes held.
    row = daemon.store.get_job(starting)
    assert row["state"] == "RUNNING"
    with daemon.store.write() as conn:
        daemon.store.transition(conn, starting, S.RUNNING, S.NODE_FAIL, "test", clock())
        daemon.store.transition(conn, starting, S.NODE_FAIL, S.PENDING, "test", clock())
        daemon.store.transition(conn, starting, S.PENDING, S.STARTING, "test", clock(), attempts=2)
    pid = daemon.store.get_job(running)["handle"]["tasks"][0][0]
    # The daemon object is dropped without any stop: a new one recovers from the store alone.
    fresh, _ = make(tmp_path)
    fresh.clock = clock
    counts = fresh.recover()
    assert counts["reattached"] == 1 and counts["aborted"] == 1
    assert fresh.store.get_job(fresh.store.get_job(running)["id"])["handle"]["tasks"][0][0] == pid
    settle(fresh, clock, [running])
    assert marker.exists() and state(fresh, running) is S.COMPLETED
    # Aborted while starting at attempt 2 of 2: NODE_FAIL, no retry left.
    assert state(fresh, starting) is S.NODE_FAIL
    assert fresh.store.held_nodes(fresh.cluster_id) == {}
    assert fresh.store.replay_states() == {running: S.COMPLETED, starting: S.NODE_FAIL}


def test_a_job_the_backend_cannot_start_fails_and_frees_its_nodes(tmp_path: Path) -> None:
    daemon, clock = make(tmp_path)
    (job,) = daemon.submit([spec(["true"], nodes=4, workdir=str(tmp_path / "missing"))])[0]
    daemon.tick(clock())
    row = daemon.store.get_job(job)
    assert row["state"] == "FAILED" and "missing" in row["reason"]
    assert daemon.free.all() and daemon.store.held_nodes(daemon.cluster_id) == {}
    assert [e["new_state"] for e in daemon.store.events_of(job)] == [
        "PENDING",
        "STARTING",
        "FAILED",
    ]


def test_pending_reasons_in_slurm_words(tmp_path: Path) -> None:
    daemon, clock = make(tmp_path)
    sleep = [PY, "-c", "import time; time.sleep(30)"]
    (big,) = daemon.submit([spec(sleep, nodes=3)])[0]
    daemon.tick(clock())
    (head,) = daemon.submit([spec(["true"], nodes=2)])[0]
    (behind,) = daemon.submit([spec(["true"], nodes=2)])[0]
    (held,) = daemon.submit([spec(["true"], hold=True)])[0]
    (dep,) = daemon.submit([spec(["true"], dependency=f"afterok:{big}")])[0]
    daemon.tick(clock())
    assert daemon.pending_reason(big) is None
    assert daemon.pending_reason(head) == "Resources"
    assert daemon.pending_reason(behind) == "Priority"
    assert daemon.pending_reason(held) == "JobHeldUser"
    assert daemon.pending_reason(dep) == "Dependency"
    for job in (big, head, behind, held, dep):
        daemon.cancel(job)
    settle(daemon, clock, [big, head, behind, held, dep])


def test_recover_releases_leaked_nodes_and_drains_cancelled_jobs(tmp_path: Path) -> None:
    daemon, clock = make(tmp_path)
    (waiting,) = daemon.submit([spec(["true"], hold=True)])[0]
    stubborn = [
        PY,
        "-c",
        "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN);time.sleep(60)",
    ]
    (cancelled,) = daemon.submit([spec(stubborn, nodes=2)])[0]
    daemon.tick(clock())
    daemon.cancel(cancelled)  # SIGTERM ignored: drains while holding its 2 nodes
    with daemon.store.write() as conn:  # a leak: a waiting job holding a node
        daemon.store.allocate(conn, daemon.cluster_id, waiting, 1, [3], ["node3"], clock())
    fresh, _ = make(tmp_path)
    fresh.clock = clock
    counts = fresh.recover()
    assert counts["leaked"] == 1 and counts["draining"] == 1 and counts["waiting"] == 1
    assert fresh.store.held_nodes(fresh.cluster_id) == {cancelled: [0, 1]}
    assert list(fresh.free) == [False, False, True, True]
    clock.t += 3  # past the grace period: SIGKILL
    settle(fresh, clock, [cancelled])
    assert fresh.free.all() and fresh.store.held_nodes(fresh.cluster_id) == {}


def test_begin_defers_the_start_to_its_time(tmp_path: Path) -> None:
    # sbatch --begin (issue 17): the job waits, with Slurm's reason, until its time, and the
    # pass that starts it comes at that time, not at the next periodic one.
    daemon, clock = make(tmp_path, reschedule_s=3600.0)
    later = JobSpec.from_mapping({"argv": ["true"], "nodes": 1, "begin": "now+30"}, now=clock())
    (job,) = daemon.submit([later])[0]
    (other,) = daemon.submit([spec(["true"])])[0]
    for _ in range(6):
        daemon.tick(clock())
        clock.t += 4.9
    assert state(daemon, job) is S.PENDING and daemon.pending_reason(job) == "BeginTime"
    assert state(daemon, other) is not S.PENDING
    clock.t = 1_030.0
    daemon.tick(clock())
    assert state(daemon, job) in (S.STARTING, S.RUNNING, S.COMPLETED)
    settle(daemon, clock, [job, other])
    started = [e["time"] for e in daemon.store.events_of(job) if e["new_state"] == "STARTING"]
    assert started == [1_030.0]
    with pytest.raises(InvalidRequestError, match="begin"):
        JobSpec.from_mapping({"argv": ["true"], "nodes": 1, "begin": "tomorrow"})
