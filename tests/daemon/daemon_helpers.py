"""Helpers of the daemon tests (a uniquely named module: several test folders have a conftest)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.daemon.client import DaemonClient
from orchestrator.daemon.state_folder import read_daemon_info

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class DaemonProcess:
    """A daemon started by a test, stopped by its own pid."""

    root: Path
    proc: subprocess.Popen[bytes]
    url: str
    token: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, **kwargs: object) -> DaemonClient:
        client = DaemonClient.from_state_dir(self.root, **kwargs)  # type: ignore[arg-type]
        return client

    def kill(self, signum: int = signal.SIGKILL, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)
        return self.proc.wait(timeout)

    def log(self) -> str:
        path = self.root / "daemon.log"
        return path.read_text() if path.exists() else ""


def start_daemon(root: Path, *args: str, timeout: float = 60.0) -> DaemonProcess:
    """Start ``python -m orchestrator.daemon`` on ``root`` and wait until it serves."""
    root.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "orchestrator.daemon", "--state-dir", str(root), *args]
    with open(root / "daemon.log", "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=REPO)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_daemon_info(root)
        if info is not None and info["pid"] == proc.pid:
            token = (root / "token").read_text().strip()
            return DaemonProcess(root, proc, info["url"], token)
        if proc.poll() is not None:
            raise RuntimeError(
                f"daemon exited {proc.returncode}:\n{(root / 'daemon.log').read_text()}"
            )
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"daemon did not come up:\n{(root / 'daemon.log').read_text()}")


def stop_daemon(daemon: DaemonProcess) -> None:
    """Stop gracefully by pid; cancel what still runs first so no job outlives the test."""
    if daemon.proc.poll() is None:
        try:
            client = daemon.client(retries=0)
            for job in client.jobs(state="PENDING,HELD,STARTING,RUNNING"):
                client.action(job["id"], "cancel")
            deadline = time.monotonic() + 15
            while client.nodes()["allocated"] and time.monotonic() < deadline:
                time.sleep(0.1)
        except Exception:  # the daemon may be broken; stop it anyway
            pass
        daemon.kill(signal.SIGTERM)


def wait_for(predicate: object, timeout: float = 30.0, interval: float = 0.05) -> None:
    """Poll ``predicate()`` until true, else fail the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout} s")


@dataclass
class PostgresServer:
    url: str
    pid: int


def count_jobs(client: DaemonClient) -> int:
    return len(client.jobs())


def dump(doc: object) -> str:
    return json.dumps(doc, indent=1)[:3000]


class Clock:
    """A clock the test moves by hand (``Daemon(clock=...)``)."""

    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def orch(
    daemon: DaemonProcess, *args: str | bytes, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the ``orch`` command line against ``daemon``'s state folder."""
    env = {**os.environ, "ORCH_STATE_DIR": str(daemon.root), "COLUMNS": "200"}
    return subprocess.run(
        [str(Path(sys.executable).parent / "orch"), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


def chromium(url: str, profile: Path, *args: str, budget_ms: int = 5000) -> str:
    """Headless Chromium on ``url`` with ``args`` (``--dump-dom``, ``--screenshot=...``), run
    ``budget_ms`` of virtual time; its standard output."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is missing: run scripts/install-system-deps.sh")
    done = subprocess.run(
        [
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
