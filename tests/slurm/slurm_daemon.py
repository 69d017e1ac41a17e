"""A real in-process daemon over the Slurm backend, ticked on the wall clock (tests/slurm)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launchers.slurm import SlurmBackend
from orchestrator.daemon.service import Daemon, DaemonConfig
from orchestrator.daemon.spec import JobSpec
from orchestrator.resources.cluster import load_cluster
from orchestrator.scheduling.job import JobState
from orchestrator.store import Store, sqlite_url

CLUSTER = load_cluster("slurm16")


class SlurmRun:
    """A daemon with its own state folder over a Slurm backend built from ``options``."""

    def __init__(self, root: Path, **options: str) -> None:
        self.root = root
        self.options = options
        self.daemon = self.open()

    def open(self) -> Daemon:
        store = Store(sqlite_url(self.root / "orch.db"))
        backend = SlurmBackend.create(self.root / "backend", CLUSTER, self.options)
        # Frequent passes: a pilot that was pending is used as soon as it runs.
        config = DaemonConfig(grace_s=2.0, reschedule_s=0.5)
        return Daemon(store, CLUSTER, backend, config)

    @property
    def backend(self) -> SlurmBackend:
        backend = self.daemon.backend
        assert isinstance(backend, SlurmBackend)
        return backend

    def submit(self, code: str, **fields: Any) -> int:
        spec = JobSpec.from_mapping({"argv": [sys.executable, "-c", code], "nodes": 1, **fields})
        return self.daemon.submit([spec])[0][0]

    def state(self, job_id: int) -> JobState:
        return JobState(self.daemon.store.get_job(job_id)["state"])

    def row(self, job_id: int) -> dict[str, Any]:
        return self.daemon.store.get_job(job_id)

    def events(self, job_id: int) -> list[tuple[str, str]]:
        return [(e["new_state"], str(e["reason"])) for e in self.daemon.store.events_of(job_id)]

    def nodes_of_attempts(self, job_id: int) -> list[str]:
        """The ``running on n1,n2`` reason of each attempt, as node-name text."""
        return [
            reason.removeprefix("running on ")
            for state, reason in self.events(job_id)
            if state == "RUNNING"
        ]

    def tick_until(self, done: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.daemon.tick(time.time())
            if done():
                return
            time.sleep(0.1)
        events = {j: self.events(j) for j in self.daemon.store.replay_states()}
        raise AssertionError(f"timed out waiting for {what}; events: {events}")

    def finish(self, *job_ids: int, timeout_s: float = 60.0) -> None:
        self.tick_until(
            lambda: all(self.state(j).is_finished for j in job_ids) and not self.daemon.draining,
            f"jobs {job_ids} to end",
            timeout_s,
        )

    def stop(self) -> None:
        """Cancel what still runs, let it drain, and stop (releases an idle pilot)."""
        for job_id in list(self.daemon.waiting) + list(self.daemon.active):
            self.daemon.cancel(job_id)
        deadline = time.monotonic() + 20
        while (self.daemon.active or self.daemon.draining) and time.monotonic() < deadline:
            self.daemon.tick(time.time())
            time.sleep(0.1)
        self.daemon.stop()
        self.daemon.store.close()


def slurm_text(*argv: str) -> str:
    """Run a Slurm command and return its stdout (fails the test if it fails)."""
    done = subprocess.run(list(argv), check=True, capture_output=True, text=True, timeout=30)
    return done.stdout
