"""The real daemon process over the Slurm backend, driven by the ``orch`` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.slurm.slurm_cluster import LocalSlurm

ORCH = [str(Path(sys.executable).with_name("orch"))]  # the installed entry point


def orch(state: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ORCH_STATE_DIR=str(state))
    return subprocess.run(
        [*ORCH, *args], env=env, capture_output=True, text=True, timeout=60, check=check
    )


def test_orch_daemon_with_the_slurm_backend(slurm: LocalSlurm, tmp_path: Path) -> None:
    state = tmp_path / "state"
    bad = orch(state, "daemon", "start", "--backend", "slurm", "--backend-opt", "x=1", check=False)
    assert bad.returncode != 0 and "mode, partition" in bad.stderr  # the valid keys are named
    orch(
        state, "daemon", "start", "--cluster", "slurm16", "--backend", "slurm",
        "--backend-opt", "mode=pilot", "--backend-opt", "pilot_nodes=2", "--grace", "2",
    )  # fmt: skip
    try:
        code = "import os; print('rank', os.environ['RANK'], os.environ['ORCH_NODENAME'])"
        orch(state, "submit", "-N", "2", "--ntasks-per-node", "2", "--", sys.executable, "-c", code)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            shown = json.loads(orch(state, "show", "1", "--json").stdout)
            if shown["state"] in ("COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL"):
                break
            time.sleep(0.2)
        assert shown["state"] == "COMPLETED", shown
        out = orch(state, "logs", "1").stdout
        lines = sorted(line.split(": ", 1)[1] for line in out.splitlines() if "rank" in line)
        nodes = {line.split()[2] for line in lines}
        assert [line.split()[1] for line in lines] == ["0", "1", "2", "3"] and len(nodes) == 2
    finally:
        orch(state, "daemon", "stop", check=False)
    # The daemon stopped with nothing running: its pilot allocation was given back.
    assert not (state / "slurm-pilot.json").exists()
