"""Fixtures of the Slurm backend tests: the real local Slurm, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slurm_cluster import LocalSlurm, local_slurm


@pytest.fixture(scope="session")
def slurm() -> Iterator[LocalSlurm]:
    with local_slurm() as cluster:
        yield cluster
