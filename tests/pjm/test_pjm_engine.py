"""A daemon with ``--backend pjm`` off a PJM login node refuses to start, naming what is missing
(issue 17: it started and kept every job PENDING)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ORCH = str(Path(sys.executable).parent / "orch")


def test_daemon_start_refuses_without_pjm_commands(tmp_path: Path) -> None:
    # A PATH with Python's folder and the system's, but no pjsub (the emulator is not installed).
    path = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    env = {**os.environ, "PATH": path, "ORCH_STATE_DIR": str(tmp_path)}
    done = subprocess.run(
        [ORCH, "daemon", "start", "--cluster", "fugaku", "--backend", "pjm"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "pjsub, pjstat, pjdel not on PATH" in done.stderr, done.stderr
