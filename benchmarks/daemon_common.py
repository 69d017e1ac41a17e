"""Helpers of the daemon benchmarks: start and stop a real daemon process, read its memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from orchestrator.daemon.client import DaemonClient
from orchestrator.daemon.state_folder import read_daemon_info


class BenchDaemon:
    """A daemon process on ``root`` (started with ``args``), stopped by its pid."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "orchestrator.daemon", "--state-dir", str(root), *args]
        with open(root / "daemon.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            info = read_daemon_info(root)
            if info is not None and info["pid"] == self.proc.pid:
                return
            if self.proc.poll() is not None:
                raise RuntimeError((root / "daemon.log").read_text()[-3000:])
            time.sleep(0.05)
        raise RuntimeError("daemon did not start")

    def client(self) -> DaemonClient:
        return DaemonClient.from_state_dir(self.root)

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(120)
