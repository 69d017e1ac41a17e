"""A Ray cluster seen as the daemon's pool: which raylet is which of our nodes.

Ray names a node by a random id that changes when its raylet restarts, and by an IP address
that several raylets on one machine share, so neither can name a node of our pool. Each raylet
is started with a custom resource of its own, ``orch_node:<name>`` with quantity 1::

    ray start --address HEAD:6379 --resources '{"orch_node:r1": 1}'

and the pool's node ``r1`` is the raylet that offers ``orch_node:r1``. A job's placement group
asks for that resource on each of its nodes, which pins each bundle to the node our allocator
chose; the quantity of 1 also keeps two of our jobs off one node even if two daemons share the
cluster.

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

from orchestrator.exceptions import ClusterConfigError
from orchestrator.resources.cluster import Cluster, cluster_from_mapping

__all__ = [
    "RESOURCE_PREFIX",
    "PoolNode",
    "cluster_from_nodes",
    "node_resource",
    "pool_nodes",
    "preset",
]

RESOURCE_PREFIX = "orch_node:"
"""Custom resource that names a raylet as one node of our pool."""


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
