"""The backend contract against the real local Slurm (direct mode: one Slurm job per job)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_contract import BackendContract, ContractHarness

from launchers.slurm import SlurmBackend
from orchestrator.resources.cluster import load_cluster


def _slurm_helpers():  # type: ignore[no-untyped-def]
    """tests/slurm/slurm_cluster.py (one module object shared with tests/slurm's fixture)."""
    if "slurm_cluster" not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "slurm" / "slurm_cluster.py"
        spec = importlib.util.spec_from_file_location("slurm_cluster", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["slurm_cluster"] = module
        spec.loader.exec_module(module)
    return sys.modules["slurm_cluster"]


@pytest.fixture(scope="session")
def slurm() -> Iterator[object]:
    """Shares one start with tests/slurm's fixture (same helper module, one count of users)."""
    with _slurm_helpers().local_slurm() as cluster:
        yield cluster


class TestSlurmContract(BackendContract):
    @pytest.fixture
    def harness(self, slurm: object) -> ContractHarness:
        cluster = load_cluster("slurm16")
        return ContractHarness(
            name="slurm",
            cluster=cluster,
            make_backend=lambda root: SlurmBackend(root, cluster.topology.node_names),
            timeout_s=60.0,
            tick_s=0.1,
        )


class TestSlurmPilotContract(BackendContract):
    """The same contract with every job a step of one held allocation (mode=pilot)."""

    @pytest.fixture
    def harness(self, slurm: object) -> Iterator[ContractHarness]:
        cluster = load_cluster("slurm16")
        made: list[SlurmBackend] = []

        def make(root: Path) -> SlurmBackend:
            backend = SlurmBackend(
                root, cluster.topology.node_names, mode="pilot", pilot_nodes=6, pilot_idle_s=5
            )
            made.append(backend)
            return backend

        yield ContractHarness(
            name="slurm-pilot", cluster=cluster, make_backend=make, timeout_s=60.0, tick_s=0.1
        )
        for backend in made:  # the daemon is dropped, not stopped: give the allocation back
            if backend.pilot is not None:
                backend.pilot.release()
