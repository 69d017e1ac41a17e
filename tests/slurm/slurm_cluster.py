"""The real local Slurm of ``../shared/slurm/`` for the tests: started when it does not answer,
stopped at the end only by whoever started it (a uniquely named helper module: the contract
test and tests/slurm both use it)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SHARED_SLURM = Path(__file__).resolve().parents[3] / "shared" / "slurm"
NODES = 16


@dataclass
class LocalSlurm:
    """A running local Slurm; ``started`` says whether these tests started it."""

    started: bool


@dataclass
class _Starts:
    users: int = 0
    started: bool = False


_STATE = _Starts()


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


@contextmanager
def local_slurm() -> Iterator[LocalSlurm]:
    """Yield a running local Slurm (16 nodes, accounting on); nested uses share one start."""
    state = _STATE
    if state.users == 0 and not answers():
        # Installs the Debian packages on a clean machine too (idempotent).
        done = subprocess.run(
            _script("start-slurm.sh"), check=False, capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.fail(f"start-slurm.sh failed ({done.returncode}):\n{done.stderr[-3000:]}")
        state.started = True
    state.users += 1
    try:
        yield LocalSlurm(started=state.started)
    finally:
        state.users -= 1
        if state.users == 0 and state.started:
            subprocess.run(_script("stop-slurm.sh"), check=False, capture_output=True, text=True)
            state.started = False


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
