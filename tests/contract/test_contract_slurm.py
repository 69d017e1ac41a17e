"""The backend contract against the real local Slurm (direct mode: one Slurm job per job), started
by the session's ``slurm`` fixture (tests/slurm/slurm_cluster.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from launchers.slurm import SlurmBackend
from orchestrator.resources.cluster import load_cluster
from tests.contract.backend_contract import BackendContract, ContractHarness
from tests.slurm.slurm_cluster import LocalSlurm


class TestSlurmContract(BackendContract):
    @pytest.fixture
    def harness(self, slurm: LocalSlurm) -> ContractHarness:
        cluster = load_cluster("slurm16")
        return ContractHarness(
            name="slurm",
            cluster=cluster,
            make_backend=lambda root: SlurmBackend(root, cluster.topology.node_names),
            timeout_s=60.0,
            tick_s=0.1,
            gpu_cluster=load_cluster("slurm16-gpu"),
        )


class TestSlurmPilotContract(BackendContract):
    """The same contract with every job a step of one held allocation (mode=pilot)."""

    @pytest.fixture
    def harness(self, slurm: LocalSlurm) -> Iterator[ContractHarness]:
        cluster = load_cluster("slurm16")
        made: list[SlurmBackend] = []

        def make(root: Path) -> SlurmBackend:
            backend = SlurmBackend(
                root, cluster.topology.node_names, mode="pilot", pilot_nodes=6, pilot_idle_s=5
            )
            made.append(backend)
            return backend

        yield ContractHarness(
            name="slurm-pilot",
            cluster=cluster,
            make_backend=make,
            timeout_s=60.0,
            tick_s=0.1,
            gpu_cluster=load_cluster("slurm16-gpu"),
        )
        for backend in made:  # the daemon is dropped, not stopped: give the allocation back
            if backend.pilot is not None:
                backend.pilot.release()
