"""The real local Slurm of ``../shared/slurm/`` for the tests: the session fixture ``slurm``
(registered by ``tests/conftest.py``; used by tests/slurm and tests/contract) starts it when it
does not answer, and then stops it at the end (``stop-slurm.sh`` stops its daemons by their PIDs);
a Slurm that was already running is left running.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SHARED_SLURM = Path(__file__).resolve().parents[3] / "shared" / "slurm"
NODES = 16


@dataclass
class LocalSlurm:
    """A running local Slurm; ``started`` says whether these tests started it."""

    started: bool


def answers() -> bool:
    """sinfo reaches a controller with all 16 nodes usable."""
    if shutil.which("sinfo") is None:
        return False
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-N", "-r", "-o", "%N"],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0 and len(set(done.stdout.split())) >= NODES


def _script(name: str) -> list[str]:
    path = SHARED_SLURM / name
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests need ../shared/slurm beside the repository")
    return ["bash", str(path)]


@pytest.fixture(scope="session")
def slurm() -> Iterator[LocalSlurm]:
    """A running local Slurm (16 nodes, accounting on), once per session."""
    started = False
    if not answers():
        # Installs the Debian packages on a clean machine too (idempotent).
        done = subprocess.run(
            _script("start-slurm.sh"), check=False, capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.fail(f"start-slurm.sh failed ({done.returncode}):\n{done.stderr[-3000:]}")
        started = True
    try:
        yield LocalSlurm(started=started)
    finally:
        if started:
            subprocess.run(_script("stop-slurm.sh"), check=False, capture_output=True, text=True)


def wait_idle(nodes: list[str], timeout: float = 30.0) -> None:
    """Wait until ``nodes`` are idle in Slurm (after a test set one down)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["sinfo", "-h", "-N", "-n", ",".join(nodes), "-o", "%N|%t"],
            check=False,
            capture_output=True,
            text=True,
        ).stdout
        if all(line.endswith("|idle") for line in out.split()) and out.strip():
            return
        time.sleep(0.2)
