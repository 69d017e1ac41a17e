"""The daemon's signal before the walltime, on the local backend (every backend gets it through
``BaseBackend.signal``), and the requeue of an attempt that then exits 3 (PREEMPTED, PENDING,
no retry spent), as Slurm's ``--signal`` and requeue."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from launchers.local import LocalBackend
from orchestrator.daemon.dispatch import parse_signal
from orchestrator.daemon.service import Daemon, DaemonConfig
from orchestrator.daemon.spec import JobSpec
from orchestrator.exceptions import InvalidRequestError
from orchestrator.resources.cluster import load_cluster
from orchestrator.scheduling.job import JobState
from orchestrator.store import Store, sqlite_url

# First attempt: wait for SIGUSR1/SIGUSR2, write "checkpoint", exit 3. Later ones: exit 0 at once.
CHECKPOINTER = """
import os, signal, sys, time
def on(n, f):
    open("checkpoint", "w").write(os.environ["ORCH_ATTEMPT"])
    sys.exit(int(os.environ.get("CODE", "3")))
signal.signal(signal.SIGUSR1, on)
signal.signal(signal.SIGUSR2, on)
if os.path.exists("checkpoint"):
    sys.exit(0)
time.sleep(30)
"""


def make(tmp_path: Path, **config: object) -> Daemon:
    store = Store(sqlite_url(tmp_path / "orch.db"))
    cfg = DaemonConfig(grace_s=2.0, reschedule_s=0.2, **config)  # type: ignore[arg-type]
    return Daemon(store, load_cluster("local"), LocalBackend(tmp_path), cfg)


def submit(daemon: Daemon, tmp_path: Path, **fields: object) -> int:
    job = {"argv": [sys.executable, "-c", CHECKPOINTER], "nodes": 1, "workdir": str(tmp_path)}
    return daemon.submit([JobSpec.from_mapping({**job, **fields})])[0][0]


def run(daemon: Daemon, job_id: int, timeout: float = 30.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        daemon.tick(time.time())
        row = daemon.store.get_job(job_id)
        if JobState(row["state"]).is_finished and not daemon.draining:
            return dict(row)
        time.sleep(0.05)
    raise AssertionError(daemon.store.get_job(job_id))


def states(daemon: Daemon, job_id: int) -> list[str]:
    return [e["new_state"] for e in daemon.store.events_of(job_id)]


def test_signal_before_the_walltime_then_exit_3_requeues_without_spending_a_retry(
    tmp_path: Path,
) -> None:
    daemon = make(tmp_path, signal_before_walltime_s=20.0)
    try:
        t0 = time.monotonic()
        job_id = submit(daemon, tmp_path, time=21)  # signalled about 1 s after its start
        row = run(daemon, job_id)
        assert row["state"] == "COMPLETED", row
        assert row["attempts"] == 2
        assert (tmp_path / "checkpoint").read_text() == "1"
        seen = states(daemon, job_id)
        assert seen.count("PREEMPTED") == 1 and "TIMEOUT" not in seen, seen
        reasons = [e["reason"] for e in daemon.store.events_of(job_id)]
        assert any("checkpointed on the walltime signal (exit 3)" in r for r in reasons), reasons
        assert time.monotonic() - t0 < 15  # well before the walltime
    finally:
        daemon.stop()


def test_a_jobs_own_signal_overrides_the_daemons_none(tmp_path: Path) -> None:
    daemon = make(tmp_path)  # the daemon sends none
    try:
        job_id = submit(daemon, tmp_path, time=21, env={"ORCH_SIGNAL": "USR2@20"})
        row = run(daemon, job_id)
        assert row["state"] == "COMPLETED" and row["attempts"] == 2, row
    finally:
        daemon.stop()


def test_without_a_signal_the_walltime_still_times_out(tmp_path: Path) -> None:
    daemon = make(tmp_path)
    try:
        job_id = submit(daemon, tmp_path, time=1)
        row = run(daemon, job_id)
        assert row["state"] == "TIMEOUT", row
        assert not (tmp_path / "checkpoint").exists()
    finally:
        daemon.stop()


def test_another_status_after_the_signal_is_a_failure(tmp_path: Path) -> None:
    daemon = make(tmp_path, signal_before_walltime_s=20.0)
    try:
        job_id = submit(daemon, tmp_path, time=21, env={"CODE": "4"})
        row = run(daemon, job_id)
        assert row["state"] == "FAILED" and row["exit_code"] == 4 and row["attempts"] == 1, row
    finally:
        daemon.stop()


def test_a_bad_orch_signal_is_refused_at_submit(tmp_path: Path) -> None:
    daemon = make(tmp_path)
    try:
        with pytest.raises(InvalidRequestError, match=r"env\.ORCH_SIGNAL"):
            submit(daemon, tmp_path, env={"ORCH_SIGNAL": "NOPE@1"})
    finally:
        daemon.stop()
    assert parse_signal("SIGUSR2@90") == (signal.SIGUSR2, 90.0)
    assert parse_signal("usr1") == (signal.SIGUSR1, 60.0)
    with pytest.raises(InvalidRequestError):
        parse_signal("USR1@-1")


def test_orch_daemon_start_takes_the_signal_before_the_walltime(tmp_path: Path) -> None:
    """The same through ``orch daemon start --signal-before-walltime`` (a real daemon)."""
    from tests.daemon.daemon_helpers import start_daemon, stop_daemon, wait_for

    daemon = start_daemon(tmp_path / "state", "--signal-before-walltime", "20")
    try:
        client = daemon.client()
        job = {"argv": [sys.executable, "-c", CHECKPOINTER], "nodes": 1, "time": 21}
        (job_id,) = client.submit({**job, "workdir": str(tmp_path)})
        wait_for(lambda: client.job(job_id)["state"] == "COMPLETED", timeout=20)
        assert client.job(job_id)["attempts"] == 2
        assert (tmp_path / "checkpoint").read_text() == "1"
    finally:
        stop_daemon(daemon)
