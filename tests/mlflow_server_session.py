"""A real ``mlflow server`` on loopback for the test sessions that need one (a uniquely named
module, importable from every test folder: ``tests/`` is on ``sys.path`` through its conftest).

Started in its own session so its gunicorn workers share its process group, and stopped by
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

__all__ = ["running_mlflow_server"]


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
