"""The backend contract against the PJM backend, direct and pilot, on the PJM emulator.

No public PJM exists: ``tests/pjm_emulator`` emulates pjsub, pjstat, pjdel and mpiexec and runs
every job for real as local processes (see its README).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_contract import BackendContract, ContractHarness

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pjm_emulator"))
from pjm_emu_pytest import emulator_session

from launchers.pjm import PjmBackend, pilot_cluster
from orchestrator.resources.cluster import Cluster
from orchestrator.resources.request import parse_shape
from orchestrator.resources.topology import NodeResources, Torus3DTopology

# The emulated machine's default shape (4x6x4, Tofu units of 2x3x2) as the daemon's cluster.
DIRECT_CLUSTER = Cluster(
    "pjm-emu", Torus3DTopology((4, 6, 4), (2, 3, 2)), NodeResources(cpus=4, memory_mb=4000)
)
PILOT_SHAPE = "2x3x2"


@pytest.fixture(scope="session")
def pjm_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield from emulator_session(tmp_path_factory.mktemp("pjm-contract"))


class TestPjmDirectContract(BackendContract):
    @pytest.fixture
    def harness(self, pjm_emulator: Path) -> ContractHarness:
        return ContractHarness(
            name="pjm-direct",
            cluster=DIRECT_CLUSTER,
            make_backend=lambda root: PjmBackend(root, elapse_margin_s=30),
        )


class TestPjmPilotContract(BackendContract):
    @pytest.fixture
    def harness(self, pjm_emulator: Path) -> ContractHarness:
        return ContractHarness(
            name="pjm-pilot",
            cluster=pilot_cluster(PILOT_SHAPE, NodeResources(cpus=4, memory_mb=4000)),
            make_backend=lambda root: PjmBackend(
                root, mode="pilot", pilot_shape=parse_shape(PILOT_SHAPE), pilot_idle_s=2
            ),
        )
