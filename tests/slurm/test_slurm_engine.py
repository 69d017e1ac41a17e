"""A Slurm that does not answer (issue 17): the daemon refuses to start on it, and one that stops
answering later shows in the daemon's status and in its waiting jobs' reason.

Unreachable is real here: ``sinfo`` and ``squeue`` read a ``SLURM_CONF`` whose controller port
has no slurmctld, and fail as they do when the controller is down ("Unable to contact slurm
controller").
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launchers.slurm import SlurmBackend
from orchestrator.daemon.service import Daemon, DaemonConfig
from orchestrator.daemon.spec import JobSpec
from orchestrator.resources.cluster import load_cluster
from orchestrator.store import Store, sqlite_url

ORCH = str(Path(sys.executable).parent / "orch")


@pytest.fixture
def unreachable_conf(tmp_path: Path) -> Path:
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        "ClusterName=gone\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=1\n"
        "MessageTimeout=1\nNodeName=n[1-16] CPUs=1 State=UNKNOWN\n"
        "PartitionName=debug Nodes=n[1-16] Default=YES State=UP\n"
    )
    return conf


def test_daemon_start_refuses_an_unreachable_slurm(tmp_path: Path, unreachable_conf: Path) -> None:
    env = {**os.environ, "SLURM_CONF": str(unreachable_conf), "ORCH_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [ORCH, "daemon", "start", "--cluster", "slurm16", "--backend", "slurm"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # It returned 0 and kept every job PENDING, saying nothing.
    assert done.returncode != 0
    assert "cannot reach Slurm" in done.stderr and "slurm controller" in done.stderr, done.stderr


def test_an_engine_that_stops_answering_is_said_where_users_look(
    slurm: object, tmp_path: Path, unreachable_conf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = load_cluster("slurm16")
    backend = SlurmBackend.create(tmp_path / "backend", cluster, {})
    daemon = Daemon(Store(sqlite_url(tmp_path / "orch.db")), cluster, backend, DaemonConfig())
    daemon.tick(time.time())
    assert daemon.engine_fault is None
    monkeypatch.setenv("SLURM_CONF", str(unreachable_conf))  # slurmctld gone from here on
    spec = JobSpec.from_mapping({"argv": ["true"], "nodes": 1}, now=time.time())
    (job,) = daemon.submit([spec])[0]
    daemon.tick(time.time())
    fault = daemon.engine_fault
    assert fault is not None and "sinfo" in fault and "slurm controller" in fault
    reason = daemon.pending_reason(job)
    assert reason is not None and reason.startswith("EngineDown (slurm: sinfo")
    monkeypatch.undo()  # it answers again
    deadline = time.monotonic() + 30
    while daemon.store.get_job(job)["state"] != "COMPLETED" and time.monotonic() < deadline:
        daemon.tick(time.time())
        time.sleep(0.1)
    assert daemon.engine_fault is None and daemon.store.get_job(job)["state"] == "COMPLETED"
