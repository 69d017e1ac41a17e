"""One real multi-node Ray cluster for the whole test session (tests/ray, tests/contract).

``ray.cluster_utils.Cluster`` starts a GCS and four real raylets on this machine, each named as a
node of ours by its ``orch_node:r<i>`` resource and declaring 2 CPUs and 4 GPUs (as ``ray start
--num-gpus 4``: Ray then counts 4 GPUs whether the machine has any, and gives each actor that
asks for some their ids and ``CUDA_VISIBLE_DEVICES``), with token auth off (a test cluster of this
machine only; Ray 2.60 advertises the machine's address, not 127.0.0.1), no dashboard, usage
stats off and a small object store. Its temporary folder and address file are our own
(``RAY_TMPDIR``), and it is stopped by ``cluster.shutdown()``, which kills only the processes it
started (never ``ray stop``: that kills every Ray on the machine).

A fixture module, registered for every test folder by ``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

RAY_NODES = 4
GPUS_PER_NODE = 4
NAMESPACE = "orch"
OBJECT_STORE_BYTES = 80 * 2**20
# Ray notices a raylet killed without warning within about a second (default: 15 s).
HEALTH = {"health_check_period_ms": 300, "health_check_failure_threshold": 3}


@dataclass
class RayTestCluster:
    """The running cluster: its address, and its raylets by our node name."""

    cluster: Any
    address: str
    raylets: dict[str, Any] = field(default_factory=dict)

    def node_args(self, name: str) -> dict[str, Any]:
        return {
            "num_cpus": 2,
            "num_gpus": GPUS_PER_NODE,
            "resources": {f"orch_node:{name}": 1},
            "object_store_memory": OBJECT_STORE_BYTES,
        }

    def kill(self, name: str) -> None:
        """Kill raylet ``name`` and its workers without warning (a node failure)."""
        self.cluster.remove_node(self.raylets.pop(name), allow_graceful=False)

    def revive(self, name: str) -> None:
        """Start raylet ``name`` again (a new Ray node id, the same name of ours)."""
        with _all_devices_visible():
            self.raylets[name] = self.cluster.add_node(**self.node_args(name))
        self.cluster.wait_for_nodes()


@contextlib.contextmanager
def _all_devices_visible() -> Iterator[None]:
    """Without ``CUDA_VISIBLE_DEVICES`` while raylets start: Ray refuses to declare more GPUs
    than it lists (a session on a machine with one GPU visible), and the raylets then give no
    task a value the test session happened to have."""
    saved = os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayTestCluster]:
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # A short folder of our own: Ray's socket paths must stay under 108 bytes.
    tmp = tempfile.mkdtemp(prefix="orch-ray-", dir="/tmp")
    previous_tmp = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = tmp
    import ray
    from ray.cluster_utils import Cluster

    test_cluster = RayTestCluster(cluster=None, address="")
    head = test_cluster.node_args("r1")
    head.update(include_dashboard=False, _system_config=HEALTH)
    with _all_devices_visible():
        cluster = Cluster(initialize_head=True, head_node_args=head, shutdown_at_exit=True)
    test_cluster.cluster = cluster
    test_cluster.address = cluster.address
    test_cluster.raylets["r1"] = cluster.head_node
    try:
        with _all_devices_visible():
            for i in range(2, RAY_NODES + 1):
                name = f"r{i}"
                test_cluster.raylets[name] = cluster.add_node(**test_cluster.node_args(name))
        cluster.wait_for_nodes()
        ray.init(
            address=cluster.address, namespace=NAMESPACE, log_to_driver=False, logging_level="ERROR"
        )
        yield test_cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        if previous_tmp is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = previous_tmp
        shutil.rmtree(tmp, ignore_errors=True)
