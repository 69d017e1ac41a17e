"""The backend contract against the Ray backend, on the session's multi-node Ray cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from launchers.ray import RayBackend
from launchers.ray.cluster import cluster_from_nodes, fetch_nodes
from orchestrator.resources.cluster import Cluster
from orchestrator.resources.topology import NodeResources
from tests.contract.backend_contract import BackendContract, ContractHarness
from tests.ray_cluster_session import NAMESPACE, RayTestCluster


class TestRayContract(BackendContract):
    @pytest.fixture
    def harness(self, ray_cluster: RayTestCluster) -> ContractHarness:
        cluster = cluster_from_nodes(fetch_nodes())
        assert cluster.size == len(ray_cluster.raylets)

        def make_backend(root: Path) -> RayBackend:
            return RayBackend.create(root, cluster, {"namespace": NAMESPACE})

        # The same raylets as a cluster that shares nodes, with the 4 GPUs each declares.
        gpus = NodeResources(cpus=cluster.node.cpus, gpus=4, memory_mb=cluster.node.memory_mb)
        gpu_cluster = Cluster(f"{cluster.name}-gpu", cluster.topology, gpus, shared=True)
        return ContractHarness(
            name="ray", cluster=cluster, make_backend=make_backend, gpu_cluster=gpu_cluster
        )
