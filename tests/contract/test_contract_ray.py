"""The backend contract against the Ray backend, on the session's multi-node Ray cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from backend_contract import BackendContract, ContractHarness
from ray_cluster_session import NAMESPACE, RayTestCluster

from launchers._ray_cluster import cluster_from_nodes, fetch_nodes
from launchers.ray_backend import RayBackend


class TestRayContract(BackendContract):
    @pytest.fixture
    def harness(self, ray_cluster: RayTestCluster) -> ContractHarness:
        cluster = cluster_from_nodes(fetch_nodes())
        assert cluster.size == len(ray_cluster.raylets)

        def make_backend(root: Path) -> RayBackend:
            return RayBackend.create(root, cluster, {"namespace": NAMESPACE})

        return ContractHarness(name="ray", cluster=cluster, make_backend=make_backend)
