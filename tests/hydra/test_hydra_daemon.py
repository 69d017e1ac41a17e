"""A multirun through a real ``orch daemon`` process: waited for, and detached then followed with
``orch sweep status / wait``; bad resources are refused naming the launcher field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sweep_test_helpers import APPS, Daemon, objective_app, run, start_daemon, stop_daemon

from orchestrator.daemon.client import DaemonClient


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("orch-daemon"))
    try:
        yield d
    finally:
        stop_daemon(d)


def _orch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "orch"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_multirun_through_daemon(daemon: Daemon, tmp_path: Path) -> None:
    # The basic sweeper raises on the first failed job when it reads the results: run the
    # passing ones with it, and see the failing one as a record of the daemon.
    run(
        objective_app(
            "+x=0.1,0.3",
            "hydra/launcher=orch",
            "hydra.launcher.scheduler.mode=daemon",
            f"hydra.launcher.scheduler.state_dir={daemon.root}",
            "hydra.launcher.name=objective",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ),
        tmp_path,
    )
    client = DaemonClient.from_state_dir(daemon.root)
    jobs = client.jobs(name="objective")
    assert len(jobs) == 2
    assert {j["state"] for j in jobs} == {"COMPLETED"}
    # Each job ran as a Hydra job: its own output folder with its config.
    for idx in (0, 1):
        assert (tmp_path / "sweep" / str(idx) / ".hydra" / "config.yaml").exists()


def test_detached_sweep_followed_by_cli(daemon: Daemon, tmp_path: Path) -> None:
    proc = run(
        objective_app(
            "+x=0.2,0.4,0.9",
            "+fail_above=0.5",
            "+sleep=1.0",
            "hydra/launcher=orch",
            "hydra.launcher.scheduler.mode=daemon",
            f"hydra.launcher.scheduler.state_dir={daemon.root}",
            "hydra.launcher.detach=true",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ),
        tmp_path,
    )
    # The command returned after submission: the jobs (1 s each) are not all done yet.
    text = proc.stdout + proc.stderr
    sweep_id = text.split("orch sweep wait ")[1].split("`")[0].strip()
    status = _orch("sweep", "status", sweep_id, "--state-dir", str(daemon.root), "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert len(doc["jobs"]) == 3
    waited = _orch("sweep", "wait", sweep_id, "--state-dir", str(daemon.root), "--poll", "0.2")
    # x=0.9 fails: a record (FAILED, its error in the table), and wait exits 1.
    assert waited.returncode == 1, waited.stdout + waited.stderr
    assert waited.stdout.count("COMPLETED") == 2
    assert "FAILED" in waited.stdout
    assert "-0.01" in waited.stdout  # -(0.2 - 0.3)^2, read back from the job's result
    unknown = _orch("sweep", "status", "nosuchid", "--state-dir", str(daemon.root))
    assert unknown.returncode != 0 and "sweep_id" in unknown.stderr


def test_bad_resources_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"hydra\.launcher\.nodes"):
        run(objective_app("+x=0.1", "hydra/launcher=orch", "hydra.launcher.nodes=99"), tmp_path)
    # Without HYDRA_FULL_ERROR the user sees the message alone, not Hydra's stack.
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    argv = objective_app("+x=0.1", "hydra/launcher=orch", "hydra.launcher.nodes=0")
    proc = subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 1
    assert "InvalidRequestError: invalid hydra.launcher.nodes=0: must be >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_a_sweep_packs_one_gpu_trials_and_each_sees_its_gpu(tmp_path: Path) -> None:
    """Issue 15: ``hydra.launcher.gpus_per_task`` was stored and ignored; on a cluster that
    shares nodes eight one-GPU trials now run at once on 2 nodes x 4 GPUs, each bound to its
    own GPU."""
    log = tmp_path / "trials.jsonl"
    app = [sys.executable, str(APPS / "gpu_app.py"), "-m", "+x=range(8)"]
    run(
        [
            *app,
            f"+log={log}",
            "+sleep=2",
            "hydra/launcher=orch",
            "hydra.launcher.cluster=local-gpu",
            "hydra.launcher.gpus_per_task=1",
            "hydra.launcher.mem=1G",
        ],
        tmp_path,
    )
    trials = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(trials) == 8
    assert all(t["cuda"] == t["gpus"] and len(t["cuda"].split(",")) == 1 for t in trials)
    assert len({(t["node"], t["cuda"]) for t in trials}) == 8
    # Packed: all eight overlap in time (whole nodes would have run them two at a time).
    assert max(t["start"] for t in trials) < min(t["end"] for t in trials)
