"""A Ray cluster seen as the daemon's pool: which raylet is which of our nodes.

Ray names a node by a random id that changes when its raylet restarts, and by an IP address
that several raylets on one machine share, so neither can name a node of our pool. Each raylet
is started with a custom resource of its own, ``orch_node:<name>`` with quantity 1::

    ray start --address HEAD:6379 --resources '{"orch_node:r1": 1}'

and the pool's node ``r1`` is the raylet that offers ``orch_node:r1``. A job's placement group
asks for that resource on each of its nodes, which pins each bundle to the node our allocator
chose (:func:`node_claim`). A job with whole nodes (``exclusive``) asks all of it, so no other
job of ours, or of another daemon sharing the Ray cluster, runs beside it; a job that holds
only part of its nodes (a cluster whose preset says ``shared: true``) asks :data:`NODE_SHARE`,
so up to 1000 such jobs share one raylet and none of them can start beside a whole-node job (or
a whole-node job beside them). Between shared jobs, the CPUs, GPUs and memory their bundles ask
keep them from overcommitting the node.

A node's bundle also holds what the job's tasks there ask of Ray (:func:`node_bundle`): ``CPU``,
``GPU`` and ``memory`` (bytes, Ray's name for a node's memory), and each task's actor takes its
own share of it (:func:`task_shares`), so Ray gives each task GPUs of its own and sets its
``CUDA_VISIBLE_DEVICES``. GPUs are declared per raylet (``ray start --num-gpus 4``, detected on a
machine that has them).

The functions here are pure (they read the node table ``ray.nodes()`` returns) except
:func:`fetch_nodes`; ``python -m launchers.ray.cluster --address HEAD:6379`` prints the cluster
preset (YAML) for ``orch daemon start --cluster FILE``.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from orchestrator.backends.contract import LaunchSpec
from orchestrator.exceptions import ClusterConfigError
from orchestrator.resources.cluster import Cluster, cluster_from_mapping

__all__ = [
    "MEMORY_RESOURCE",
    "NODE_SHARE",
    "RESOURCE_PREFIX",
    "RESOURCE_UNIT",
    "PoolNode",
    "TaskShare",
    "cluster_from_nodes",
    "node_bundle",
    "node_claim",
    "node_resource",
    "pool_nodes",
    "preset",
    "shortfall",
    "task_gpus",
    "task_shares",
]

RESOURCE_PREFIX = "orch_node:"
"""Custom resource that names a raylet as one node of our pool."""
MEMORY_RESOURCE = "memory"
"""Ray's resource for a node's memory, in bytes (a bundle asks for it by this name, an actor
by its ``memory=`` option)."""
RESOURCE_UNIT = 1e-4
"""The smallest amount of a resource Ray counts (it keeps amounts as whole multiples of it and
refuses to be asked a finer fraction)."""
NODE_SHARE = 0.001
"""How much of its node's ``orch_node:`` resource (1 in all) a job that shares the node asks:
a fraction Ray can count exactly (10 of its units), small enough for 1000 jobs on one node."""
_MB = 2**20


def node_resource(name: str) -> str:
    """The custom resource a raylet offers to be our node ``name``.

    >>> node_resource("r1")
    'orch_node:r1'
    """
    return RESOURCE_PREFIX + name


@dataclass(frozen=True)
class PoolNode:
    """One raylet that is a node of our pool."""

    name: str
    node_id: str
    alive: bool
    address: str
    cpus: int
    gpus: int
    memory_mb: int


@dataclass(frozen=True)
class TaskShare:
    """What one task's actor takes from its node's bundle."""

    cpus: int
    gpus: int
    memory_bytes: int


def task_gpus(gpus_per_task: int, gpus_per_node: int, tasks_per_node: int) -> list[int]:
    """GPUs per task of one node, by local rank.

    Per task when the request gave them so; GPUs asked per node (``gpus_per_node``, no
    ``gpus_per_task``) are split evenly among the node's tasks when their number divides, else
    all go to local rank 0 (Ray gives a GPU to one actor only: the tasks cannot all see every
    GPU of the node, as Slurm's ``--gpus-per-node`` lets them).

    >>> task_gpus(1, 0, 2), task_gpus(0, 4, 2), task_gpus(0, 3, 2), task_gpus(0, 0, 2)
    ([1, 1], [2, 2], [3, 0], [0, 0])
    """
    if gpus_per_task > 0:
        return [gpus_per_task] * tasks_per_node
    if gpus_per_node <= 0:
        return [0] * tasks_per_node
    if gpus_per_node % tasks_per_node == 0:
        return [gpus_per_node // tasks_per_node] * tasks_per_node
    return [gpus_per_node] + [0] * (tasks_per_node - 1)


def task_shares(spec: LaunchSpec) -> list[TaskShare]:
    """Each task's share of its node's bundle, by local rank (alike on every node): its CPUs,
    its GPUs (:func:`task_gpus`) and an even part of the node's memory (local rank 0 takes the
    bytes that do not divide)."""
    tpn = spec.tasks_per_node
    memory = max(0, spec.mem_per_node_mb) * _MB
    part, rest = divmod(memory, tpn)
    gpus = task_gpus(spec.gpus_per_task, spec.gpus_per_node, tpn)
    return [
        TaskShare(spec.cpus_per_task, gpus[local], part + (rest if local == 0 else 0))
        for local in range(tpn)
    ]


def node_claim(spec: LaunchSpec) -> float:
    """How much of each of its nodes' ``orch_node:`` resource the job's bundles ask: all of it
    (1) for a job with whole nodes, :data:`NODE_SHARE` for one that shares its nodes.

    >>> node_claim(LaunchSpec(1, 1, ["true"], None, ["r1"])), NODE_SHARE
    (1.0, 0.001)
    """
    return 1.0 if spec.exclusive else NODE_SHARE


def node_bundle(name: str, spec: LaunchSpec) -> dict[str, float]:
    """The placement-group bundle of the job's node ``name``: the node itself (all of it, or
    a share: :func:`node_claim`) and what its tasks take (the GPUs the job asked for the node,
    at least the tasks' own), resources of zero left out.

    >>> node_bundle("r1", LaunchSpec(1, 1, ["true"], None, ["r1"], 2, gpus_per_task=1))
    {'orch_node:r1': 1.0, 'CPU': 2.0, 'GPU': 2.0}
    >>> shared = LaunchSpec(1, 1, ["true"], None, ["r1"], gpus_per_task=1, exclusive=False)
    >>> node_bundle("r1", shared)
    {'orch_node:r1': 0.001, 'CPU': 1.0, 'GPU': 1.0}
    """
    shares = task_shares(spec)
    bundle = {node_resource(name): node_claim(spec)}
    amounts = {
        "CPU": sum(s.cpus for s in shares),
        "GPU": max(spec.gpus_on_each_node, sum(s.gpus for s in shares)),
        MEMORY_RESOURCE: sum(s.memory_bytes for s in shares),
    }
    bundle.update((key, float(value)) for key, value in amounts.items() if value > 0)
    return bundle


def shortfall(node: PoolNode, bundle: Mapping[str, float]) -> str | None:
    """Why raylet ``node`` can never hold ``bundle`` (it offers less CPU, GPU or memory in all
    than the bundle asks), or None when it can once they are free."""
    offered = {"CPU": node.cpus, "GPU": node.gpus}
    short = [
        f"{bundle[key]:g} {key} (it offers {have})"
        for key, have in offered.items()
        if bundle.get(key, 0.0) > have
    ]
    asked_mb = bundle.get(MEMORY_RESOURCE, 0.0) / _MB
    if asked_mb > node.memory_mb:
        short.append(f"{asked_mb:g} MB of memory (it offers {node.memory_mb} MB)")
    if not short:
        return None
    asks = ", ".join(short)
    return f"raylet {node_resource(node.name)} cannot hold the job's bundle: it asks {asks}"


def _natural(name: str) -> list[Any]:
    """Sort key putting ``r2`` before ``r10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def pool_nodes(table: Iterable[Mapping[str, Any]]) -> dict[str, PoolNode]:
    """Our nodes in a ``ray.nodes()`` table, by name.

    A name offered by several entries (a raylet that died and was started again gets a new
    id; the dead entry stays in the table) resolves to the live one.

    Raises:
        ClusterConfigError: two live raylets offer the same name.
    """
    found: dict[str, PoolNode] = {}
    for entry in table:
        resources = entry.get("Resources") or {}
        names = [k[len(RESOURCE_PREFIX) :] for k in resources if k.startswith(RESOURCE_PREFIX)]
        for name in names:
            node = PoolNode(
                name=name,
                node_id=str(entry["NodeID"]),
                alive=bool(entry.get("Alive")),
                address=str(entry.get("NodeManagerAddress", "")),
                cpus=int(resources.get("CPU", 0)),
                gpus=int(resources.get("GPU", 0)),
                memory_mb=int(resources.get("memory", 0) // 2**20),
            )
            earlier = found.get(name)
            if earlier is not None and earlier.alive and node.alive:
                raise ClusterConfigError(
                    f"two live raylets ({earlier.node_id[:8]}, {node.node_id[:8]}) both offer "
                    f"{node_resource(name)}: give each raylet a name of its own"
                )
            if earlier is None or node.alive:
                found[name] = node
    return dict(sorted(found.items(), key=lambda item: _natural(item[0])))


def preset(nodes: Mapping[str, PoolNode], name: str = "ray") -> dict[str, Any]:
    """A flat cluster preset (the mapping of ``conf/cluster/*.yaml``) for these nodes.

    Per-node resources are the smallest any live node offers (the scheduler treats nodes as
    alike); at least one CPU.

    Raises:
        ClusterConfigError: no raylet offers an ``orch_node:`` resource.
    """
    if not nodes:
        raise ClusterConfigError(
            "no raylet of this Ray cluster names itself a node of ours: start each with "
            "--resources '{\"orch_node:NAME\": 1}' (see docs/backends.md, Ray)"
        )
    live = [n for n in nodes.values() if n.alive] or list(nodes.values())
    return {
        "name": name,
        "description": f"the Ray cluster's {len(nodes)} raylets named orch_node:<name>",
        "topology": "flat",
        "nodes": len(nodes),
        "node_names": ",".join(nodes),
        "node": {
            "cpus": max(1, min(n.cpus for n in live)),
            "gpus": min(n.gpus for n in live),
            "memory_mb": min(n.memory_mb for n in live),
        },
    }


def cluster_from_nodes(nodes: Mapping[str, PoolNode], name: str = "ray") -> Cluster:
    """The daemon's :class:`Cluster` for these raylets (see :func:`preset`)."""
    return cluster_from_mapping(preset(nodes, name), f"<ray cluster {name}>")


def fetch_nodes() -> dict[str, PoolNode]:
    """Our nodes in the Ray cluster this process is connected to (one GCS call)."""
    import ray

    return pool_nodes(ray.nodes())  # type: ignore[no-untyped-call]


def main(argv: Sequence[str] | None = None) -> int:
    """Print the cluster preset of a running Ray cluster."""
    parser = argparse.ArgumentParser(
        prog="python -m launchers.ray.cluster",
        description="Print the orch cluster preset (YAML) of a running Ray cluster.",
    )
    parser.add_argument("--address", default="auto", help="The Ray cluster (HEAD:6379).")
    parser.add_argument("--name", default="ray", help="The preset's name.")
    args = parser.parse_args(argv)
    import ray

    ray.init(address=args.address, logging_level=logging.ERROR, log_to_driver=False)
    try:
        mapping = preset(fetch_nodes(), args.name)
    except ClusterConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        ray.shutdown()
    sys.stdout.write(yaml.safe_dump(mapping, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
