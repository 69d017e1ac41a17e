"""The backend contract against the local backend (process groups on this machine)."""

from __future__ import annotations

import pytest
from backend_contract import BackendContract, ContractHarness

from launchers.local import LocalBackend
from orchestrator.resources.cluster import load_cluster


class TestLocalContract(BackendContract):
    @pytest.fixture
    def harness(self) -> ContractHarness:
        return ContractHarness(
            name="local", cluster=load_cluster("local"), make_backend=LocalBackend
        )
