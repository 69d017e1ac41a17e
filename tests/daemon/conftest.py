"""Fixtures for the daemon tests: a real daemon process, a real PostgreSQL server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import PG_BIN, DaemonProcess, PostgresServer, start_daemon, stop_daemon

from orchestrator.daemon.client import DaemonClient


@pytest.fixture(scope="session")
def shared_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon for the whole session: flat 4-node local cluster, 1 s grace."""
    root = tmp_path_factory.mktemp("daemon")
    daemon = start_daemon(root, "--nodes", "4", "--grace", "1")
    yield daemon
    stop_daemon(daemon)


@pytest.fixture
def client(shared_daemon: DaemonProcess) -> Iterator[DaemonClient]:
    c = shared_daemon.client()
    yield c
    c.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL (Debian's postgresql-15) on a Unix socket in a fresh folder, run as the
    ``postgres`` user (root cannot run it), stopped by its own pid at the end."""
    initdb = PG_BIN / "initdb"
    if not initdb.exists() or shutil.which("runuser") is None:
        pytest.fail("PostgreSQL 15 is missing: run scripts/install-system-deps.sh")
    base = Path(tempfile.mkdtemp(prefix="orch-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    os.chmod(base, 0o755)
    shutil.chown(base, "postgres", "postgres")
    shutil.chown(sock, "postgres", "postgres")

    def as_postgres(*cmd: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, timeout=120
        )

    as_postgres(str(initdb), "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8")
    as_postgres(
        str(PG_BIN / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(base / "log"),
        "-w",
        "-o",
        f"-c listen_addresses='' -k {sock} -c fsync=off",
        "start",
    )
    pid = int((data / "postmaster.pid").read_text().split()[0])
    as_postgres(str(PG_BIN / "createdb"), "-h", str(sock), "orch")
    try:
        yield PostgresServer(f"postgresql+psycopg://postgres@/orch?host={sock}", pid)
    finally:
        os.kill(pid, signal.SIGINT)  # fast shutdown
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        shutil.rmtree(base, ignore_errors=True)
