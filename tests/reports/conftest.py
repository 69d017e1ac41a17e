"""A small real experiment, recorded once per test session (tests/reports/record_experiment.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from record_experiment import Recorded

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    folder = tmp_path_factory.mktemp("recorded")
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "reports" / "record_experiment.py"), str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    uri = done.stdout.strip().splitlines()[-1]
    assert uri.startswith("sqlite:///"), done.stdout[-2000:]
    return Recorded(folder, uri)


@dataclass(frozen=True)
class MlflowServer:
    """A real ``mlflow server`` on loopback, on the recorded store."""

    url: str
    pid: int


@pytest.fixture(scope="session")
def mlflow_server(recorded: Recorded) -> Iterator[MlflowServer]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (recorded.folder / "server.log").open("w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            recorded.uri,
            "--default-artifact-root",
            str(recorded.folder / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=recorded.folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers share the group: stopped together, by our PID
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (recorded.folder / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server not healthy after 180 s"
            time.sleep(0.5)
        yield MlflowServer(url, proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
