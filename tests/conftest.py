"""Shared fixtures: paths to the shipped and shared traces."""

from __future__ import annotations

from pathlib import Path

import pytest

# The session's one Ray test cluster (tests/ray, tests/contract): started only if a test asks.
from ray_cluster_session import ray_cluster  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
SHARED_TRACES = REPO.parent / "shared" / "data" / "traces"
SHIPPED_TRACE = REPO / "orchestrator" / "data" / "lublin_256.swf.gz"


@pytest.fixture(scope="session")
def shipped_trace() -> Path:
    return SHIPPED_TRACE


@pytest.fixture(scope="session")
def shared_traces() -> Path:
    if not SHARED_TRACES.is_dir():
        pytest.fail(
            f"the shared traces are missing: expected {SHARED_TRACES} (../shared beside the repo)"
        )
    return SHARED_TRACES
