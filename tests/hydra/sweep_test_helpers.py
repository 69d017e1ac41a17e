"""Helpers of the Hydra plugin tests (a uniquely named module, importable from tests/hydra)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"


def run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a command (a Hydra app) and fail with its output when it fails."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
            f"\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


def objective_app(*overrides: str) -> list[str]:
    return [sys.executable, str(APPS / "objective_app.py"), "-m", *overrides]


def train_app(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "sweeps.train", "-m", *overrides]


@dataclass
class Daemon:
    """A real ``orch daemon`` process started by a test, stopped by its own pid."""

    root: Path
    proc: subprocess.Popen[bytes]
    url: str


def start_daemon(root: Path, timeout: float = 60.0) -> Daemon:
    root.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "orchestrator.daemon", "--state-dir", str(root)]
    with open(root / "daemon.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=REPO)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info_path = root / "daemon.json"
        if info_path.exists():
            info = json.loads(info_path.read_text())
            if info["pid"] == proc.pid:
                return Daemon(root, proc, info["url"])
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited: {(root / 'daemon.log').read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("daemon did not come up")


def stop_daemon(daemon: Daemon) -> None:
    if daemon.proc.poll() is None:
        os.kill(daemon.proc.pid, signal.SIGTERM)
        daemon.proc.wait(30)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait until a server started by the test listens on 127.0.0.1:port."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"server exited {proc.returncode}: {err}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")
