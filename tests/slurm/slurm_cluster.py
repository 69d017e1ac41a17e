"""The real local Slurm of ``../shared/slurm/`` for the tests: the session fixture ``slurm``
(registered by ``tests/conftest.py``; used by tests/slurm and tests/contract) starts it when it
does not answer, and then stops it at the end (``stop-slurm.sh`` stops its daemons by their PIDs);
a Slurm that was already running is left running.

Always with GPUs: every node offers ``GPUS_PER_NODE`` (fake) GPUs as generic resources, which
Slurm schedules, binds and accounts as real ones (``SLURM_GPUS_PER_NODE`` of start-slurm.sh).
A running Slurm without them is reconfigured: start-slurm.sh sees the changed configuration and
restarts the daemons itself (stop-slurm.sh, keeping jobs, then a fresh start), and leaves the
cluster running as it found it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SHARED_SLURM = Path(__file__).resolve().parents[3] / "shared" / "slurm"
NODES = 16
GPUS_PER_NODE = 4


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


def has_gpus() -> bool:
    """Every node offers ``GPUS_PER_NODE`` GPUs (``sinfo %G``: ``gpu:4``; ``(null)`` without)."""
    done = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N|%G"],
        check=False,
        capture_output=True,
        text=True,
        timeout=10,
    )
    rows = dict(line.split("|", 1) for line in done.stdout.split() if "|" in line)
    return len(rows) >= NODES and all(g == f"gpu:{GPUS_PER_NODE}" for g in rows.values())


def _start() -> None:
    """start-slurm.sh with GPUs (installs the Debian packages on a clean machine too)."""
    env = {**os.environ, "SLURM_GPUS_PER_NODE": str(GPUS_PER_NODE)}
    done = subprocess.run(
        _script("start-slurm.sh"), check=False, capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        pytest.fail(f"start-slurm.sh failed ({done.returncode}):\n{done.stderr[-3000:]}")


def _script(name: str) -> list[str]:
    path = SHARED_SLURM / name
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests need ../shared/slurm beside the repository")
    return ["bash", str(path)]


@pytest.fixture(scope="session")
def slurm() -> Iterator[LocalSlurm]:
    """A running local Slurm (16 nodes of 4 GPUs, accounting on), once per session."""
    started = False
    if not answers():
        _start()
        started = True
    elif not has_gpus():
        _start()  # a changed configuration: start-slurm.sh restarts the daemons itself
    if not has_gpus():
        pytest.fail(f"the local Slurm offers no gpu:{GPUS_PER_NODE} on every node (sinfo %G)")
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
