"""The session's one MLflow store and its one real ``mlflow server`` on loopback (a fixture
module registered by ``tests/conftest.py``).

``mlflow_store`` is a fresh folder with ``mlflow.db`` (SQLite) and ``artifacts/``: the recorded
experiment of ``tests/reports`` is written into it, and ``mlflow_server`` serves it, so the MLflow
UI test sees that experiment and the training-job tests of ``tests/sweeps`` log to the same server
(each in experiments of its own). Neither fixture needs the other: a session that only trains
starts the server without recording, and one that only reads the recording starts no server.

The server is started in its own session so its workers share its process group, and stopped by
that group (led by the server's own PID): SIGTERM, then SIGKILL after a grace.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["mlflow_server", "mlflow_store", "running_mlflow_server"]


@contextmanager
def running_mlflow_server(
    backend_store_uri: str,
    artifacts: Path,
    log_path: Path,
    *,
    extra_args: tuple[str, ...] = (),
    cwd: Path | None = None,
    healthy_within_s: float = 120.0,
    stop_grace_s: float = 30.0,
) -> Iterator[tuple[str, int]]:
    """Run ``mlflow server`` until the block ends; yields its URL and PID once ``/health``
    answers. Fails with the end of its log if it exits or stays unhealthy."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    argv = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--default-artifact-root",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra_args,
    ]
    log = log_path.open("wb")
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + healthy_within_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy after {healthy_within_s:g} s")
            time.sleep(0.5)
        yield url, proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=stop_grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's MLflow store folder: ``mlflow.db`` and ``artifacts/`` (both made on use)."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture(scope="session")
def mlflow_server(mlflow_store: Path) -> Iterator[str]:
    """A real ``mlflow server`` on the session's store, once per session; yields its URL."""
    # One worker: two shared cores. Healthy in about 17 s on an idle machine; 180 s when loaded.
    with running_mlflow_server(
        f"sqlite:///{mlflow_store / 'mlflow.db'}",
        mlflow_store / "artifacts",
        mlflow_store / "server.log",
        extra_args=("--workers", "1"),
        cwd=mlflow_store,
        healthy_within_s=180,
        stop_grace_s=20,
    ) as (url, _pid):
        yield url
