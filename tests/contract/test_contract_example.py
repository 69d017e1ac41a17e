"""The backend contract against the minimal example backend (``example_backend.py``): a new
engine needs three hooks and its status format, and keeps the same contract."""

from __future__ import annotations

import pytest

from orchestrator.resources.cluster import load_cluster
from tests.contract.backend_contract import BackendContract, ContractHarness
from tests.contract.example_backend import ExampleBackend, parse_ps


class TestExampleContract(BackendContract):
    @pytest.fixture
    def harness(self) -> ContractHarness:
        return ContractHarness(
            name="example", cluster=load_cluster("local"), make_backend=ExampleBackend
        )


def test_parse_ps_reads_captured_output() -> None:
    # Captured from procps-ng 4.0.2 (Debian 12): ps -o pid=,stat= -p 1,2,<zombie>
    captured = "      1 Ss\n   4178 Z\n"
    assert parse_ps(captured) == {1: "S", 4178: "Z"}
    assert parse_ps("") == {}
