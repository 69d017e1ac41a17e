"""The backend contract against the PJM backend, direct and pilot, on the PJM emulator.

No public PJM exists: ``tests/pjm_emulator`` emulates pjsub, pjstat, pjdel and mpiexec and runs
every job for real as local processes (see its README); the ``pjm_emulator`` fixture
(tests/pjm_emulator/pjm_emu_pytest.py) puts its commands first on PATH.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from launchers.pjm import PjmBackend, pilot_cluster
from orchestrator.resources.cluster import Cluster
from orchestrator.resources.request import parse_shape
from orchestrator.resources.topology import NodeResources, Torus3DTopology
from tests.contract.backend_contract import BackendContract, ContractHarness

# The emulated machine's default shape (4x6x4, Tofu units of 2x3x2) as the daemon's cluster.
DIRECT_CLUSTER = Cluster(
    "pjm-emu", Torus3DTopology((4, 6, 4), (2, 3, 2)), NodeResources(cpus=4, memory_mb=4000)
)
PILOT_SHAPE = "2x3x2"


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
