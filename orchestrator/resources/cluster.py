"""A cluster: a named pool of nodes with a topology and per-node resources; YAML presets.

Presets live in the repository's ``conf/cluster/`` (``local``, ``slurm16``, ``fugaku``,
``fattree1024``). A preset is a mapping::

    name: slurm16
    topology: tree            # flat | tree | torus3d
    node: {cpus: 4, gpus: 0, memory_mb: 4000}
    switches:                 # tree: topology.conf records
      - {name: s1, nodes: "n[1-8]"}
      - {name: s0, switches: "s[1-2]"}
    # flat: nodes: 16 (or node_names: "n[1-16]");  torus3d: dims: [X, Y, Z], unit: [2, 3, 2]

A GPU cluster shares its nodes between jobs (``shared: true``: cores, GPUs and memory are
handed out per job, as Slurm's ``select/cons_tres``); whole-node clusters (the default) give
each job whole nodes. Optional keys::

    shared: true
    groups:                   # node groups (Slurm partitions); the first is the default
      - {name: gpu, nodes: "g[1-8]", node: {cpus: 96, gpus: 8, memory_mb: 2000000}}
      - {name: cpu, nodes: "c[1-4]", node: {cpus: 192, gpus: 0, memory_mb: 768000}}
    resource_types:           # named units, as ``qsub -l NAME=N`` asks for N of them
      node_f: {exclusive: true}
      gpu_1: {cpus: 8, gpus: 1, memory_mb: 98304}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from orchestrator.exceptions import ClusterConfigError, InvalidRequestError
from orchestrator.resources.hostlist import expand_hostlist
from orchestrator.resources.request import JobRequest, ShapeMode
from orchestrator.resources.topology import (
    BaseTopology,
    FlatTopology,
    NodeArray,
    NodeResources,
    Torus3DTopology,
    TreeTopology,
)

__all__ = [
    "PRESET_DIR",
    "Cluster",
    "NodeGroup",
    "ResourceType",
    "list_presets",
    "load_cluster",
]

PRESET_DIR = Path(__file__).resolve().parents[2] / "conf" / "cluster"


@dataclass(frozen=True)
class ResourceType:
    """A named unit a site offers (TSUBAME's ``node_q``, ABCI's ``rt_HG``): one unit per node,
    either a whole node or so many cores, GPUs and MB of memory."""

    exclusive: bool = False
    cpus: int = 0
    gpus: int = 0
    memory_mb: int = 0


@dataclass(frozen=True)
class NodeGroup:
    """A named set of alike nodes (a Slurm partition)."""

    name: str
    nodes: NodeArray
    node: NodeResources


@dataclass(frozen=True)
class Cluster:
    """A named pool of nodes.

    Attributes:
        shared: Jobs share nodes (cores, GPUs and memory are handed out per job); False: each
            job holds whole nodes.
        groups: Node groups (partitions), the default first; one group of every node when the
            preset names none.
        resource_types: Named units users may ask for by name (``orch submit -l NAME=N``).
    """

    name: str
    topology: BaseTopology
    node: NodeResources = field(default_factory=NodeResources)
    shared: bool = False
    groups: tuple[NodeGroup, ...] = ()
    resource_types: Mapping[str, ResourceType] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.groups:
            every = NodeGroup("", np.arange(self.topology.size, dtype=np.int64), self.node)
            object.__setattr__(self, "groups", (every,))

    @property
    def size(self) -> int:
        return self.topology.size

    def group(self, partition: str) -> NodeGroup:
        """The node group ``partition`` names ("" for the default one).

        Raises:
            InvalidRequestError: no such group.
        """
        if not partition:
            return self.groups[0]
        for group in self.groups:
            if group.name == partition:
                return group
        names = [g.name for g in self.groups if g.name]
        raise InvalidRequestError(
            "partition",
            partition,
            f"cluster {self.name!r} has "
            + (f"the partitions {', '.join(names)}" if names else "no named partitions"),
            names[0] if names else "(leave it out)",
        )

    def check_request(self, request: JobRequest) -> None:
        """Raise :class:`InvalidRequestError` when ``request`` can never run here."""
        topo = self.topology
        group = self.group(request.partition)
        node = group.node
        n = request.node_count
        if n > group.nodes.size and len(self.groups) > 1:
            # A job runs in one partition: the default one when it names none.
            name = request.partition or f"{group.name} (the default)"
            raise InvalidRequestError(
                "nodes",
                n,
                f"asks for {n} nodes but partition {name!r} has {group.nodes.size}",
                str(group.nodes.size),
            )
        if n > topo.size:
            field = "nodes" if request.nodes is not None else "shape"
            raise InvalidRequestError(
                field,
                request.nodes if request.nodes is not None else str(request.shape),
                f"asks for {n} nodes but cluster {self.name!r} has {topo.size}",
                str(min(topo.size, 4)) if field == "nodes" else "2x2x1",
            )
        where = f"{self.name!r}" + (
            f" partition {request.partition!r}" if request.partition else ""
        )
        cpus = request.cpus_on_node
        if cpus > node.cpus:
            raise InvalidRequestError(
                "cpus_per_task",
                request.cpus_per_task,
                f"{request.tasks_per_node} tasks x {request.cpus_per_task} CPUs = {cpus} "
                f"> {node.cpus} CPUs per node on {where}",
                str(max(1, node.cpus // request.tasks_per_node)),
            )
        gpus = request.tasks_per_node * request.gpus_per_task
        if gpus > node.gpus:
            raise InvalidRequestError(
                "gpus_per_task",
                request.gpus_per_task,
                f"{gpus} GPUs per node > {node.gpus} on {where}",
                str(node.gpus // request.tasks_per_node),
            )
        if request.gpus_per_node > node.gpus:
            raise InvalidRequestError(
                "gpus_per_node",
                request.gpus_per_node,
                f"more than the {node.gpus} GPUs a node of {where} has",
                str(node.gpus),
            )
        if node.memory_mb and request.mem_per_node_mb > node.memory_mb:
            raise InvalidRequestError(
                "mem_per_node_mb",
                request.mem_per_node_mb,
                f"more than the {node.memory_mb} MB a node of {where} has",
                str(node.memory_mb),
            )
        shape = request.shape
        if shape is None:
            return
        if not isinstance(topo, Torus3DTopology):
            raise InvalidRequestError(
                "shape",
                str(shape),
                f"cluster {self.name!r} is {topo.kind}: shapes need a torus3d cluster",
                f"nodes={shape.volume}",
            )
        if shape.mode is ShapeMode.NONCONT:
            return
        extents = shape.extents3
        dims = topo.dims
        if shape.strict:
            fits = all(e <= d for e, d in zip(extents, dims, strict=True))
        else:
            fits = all(e <= d for e, d in zip(sorted(extents), sorted(dims), strict=True))
        if not fits:
            raise InvalidRequestError(
                "shape",
                str(shape),
                "the box does not fit in the {}x{}x{} torus{}".format(
                    *dims, "" if not shape.strict else " without swapping axes"
                ),
                "{}x{}x{}".format(*(min(e, d) for e, d in zip(extents, dims, strict=True))),
            )


def _require(spec: Mapping[str, Any], key: str, source: str) -> Any:
    if key not in spec:
        raise ClusterConfigError(f"{source}: missing key {key!r}")
    return spec[key]


def cluster_from_mapping(spec: Mapping[str, Any], source: str = "<cluster>") -> Cluster:
    """Build a :class:`Cluster` from a preset mapping (see the module docstring)."""
    if not isinstance(spec, Mapping):
        raise ClusterConfigError(f"{source}: expected a mapping, got {type(spec).__name__}")
    kind = _require(spec, "topology", source)
    known = {
        "name",
        "topology",
        "node",
        "nodes",
        "node_names",
        "switches",
        "dims",
        "unit",
        "description",
        "shared",
        "groups",
        "resource_types",
    }
    unknown = set(spec) - known
    if unknown:
        raise ClusterConfigError(
            f"{source}: unknown keys {sorted(unknown)} (known: {sorted(known)})"
        )
    try:
        node = NodeResources(**dict(spec.get("node", {})))
    except TypeError as e:
        raise ClusterConfigError(f"{source}: node: {e}") from e
    topo: BaseTopology
    if kind == "flat":
        names = spec.get("node_names")
        if names is not None:
            expanded = expand_hostlist(str(names))
            topo = FlatTopology(len(expanded), names=expanded)
        else:
            topo = FlatTopology(_require(spec, "nodes", source))
    elif kind == "tree":
        topo = TreeTopology.from_spec(_require(spec, "switches", source))
    elif kind == "torus3d":
        topo = Torus3DTopology(_require(spec, "dims", source), spec.get("unit"))
    else:
        raise ClusterConfigError(f"{source}: topology {kind!r} is not one of flat, tree, torus3d")
    shared = spec.get("shared", False)
    if not isinstance(shared, bool):
        raise ClusterConfigError(f"{source}: shared: expected true or false, got {shared!r}")
    groups = _groups(spec.get("groups"), topo, node, source)
    types = _resource_types(spec.get("resource_types"), groups, source)
    return Cluster(
        name=str(spec.get("name", Path(source).stem)),
        topology=topo,
        node=groups[0].node if groups else node,
        shared=shared,
        groups=groups,
        resource_types=types,
    )


def _groups(
    spec: Any, topo: BaseTopology, default: NodeResources, source: str
) -> tuple[NodeGroup, ...]:
    if spec is None:
        return ()
    if not isinstance(spec, list) or not spec:
        raise ClusterConfigError(f"{source}: groups: expected a non-empty list of node groups")
    groups: list[NodeGroup] = []
    taken: set[int] = set()
    for i, entry in enumerate(spec):
        where = f"{source}: groups[{i}]"
        if not isinstance(entry, Mapping) or not {"name", "nodes"} <= set(entry):
            raise ClusterConfigError(f"{where}: expected a mapping with name, nodes and node")
        unknown = set(entry) - {"name", "nodes", "node"}
        if unknown:
            raise ClusterConfigError(f"{where}: unknown keys {sorted(unknown)}")
        try:
            names = expand_hostlist(str(entry["nodes"]))
            nodes = [topo.index_of(name) for name in names]
        except (KeyError, ValueError) as e:
            raise ClusterConfigError(f"{where}: nodes: {e}") from e
        if taken & set(nodes):
            raise ClusterConfigError(f"{where}: a node is in two groups")
        taken.update(nodes)
        try:
            node = NodeResources(**dict(entry.get("node", {}))) if "node" in entry else default
        except TypeError as e:
            raise ClusterConfigError(f"{where}: node: {e}") from e
        groups.append(NodeGroup(str(entry["name"]), np.array(sorted(nodes), np.int64), node))
    if len(taken) != topo.size:
        raise ClusterConfigError(f"{source}: groups: every node must be in one group")
    return tuple(groups)


def _resource_types(
    spec: Any, groups: tuple[NodeGroup, ...], source: str
) -> dict[str, ResourceType]:
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise ClusterConfigError(f"{source}: resource_types: expected a mapping name -> unit")
    types: dict[str, ResourceType] = {}
    for name, entry in spec.items():
        try:
            unit = ResourceType(**dict(entry))
        except (TypeError, ValueError) as e:
            raise ClusterConfigError(f"{source}: resource_types.{name}: {e}") from e
        values = (unit.cpus, unit.gpus, unit.memory_mb)
        if not isinstance(unit.exclusive, bool) or not all(
            isinstance(v, int) and v >= 0 for v in values
        ):
            raise ClusterConfigError(
                f"{source}: resource_types.{name}: exclusive is true/false and cpus, gpus, "
                "memory_mb non-negative integers"
            )
        if not unit.exclusive and unit.cpus < 1:
            raise ClusterConfigError(f"{source}: resource_types.{name}: cpus must be >= 1")
        types[str(name)] = unit
    return types


def list_presets(directory: Path = PRESET_DIR) -> list[str]:
    """Names of the cluster presets shipped in ``conf/cluster/``."""
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_cluster(name_or_path: str | Path, directory: Path = PRESET_DIR) -> Cluster:
    """Load a preset by name (``slurm16``) or a YAML file by path.

    Raises:
        ClusterConfigError: unknown preset, unreadable file or malformed content.
    """
    path = Path(name_or_path)
    if path.suffix not in {".yaml", ".yml"}:
        path = directory / f"{name_or_path}.yaml"
        if not path.exists():
            raise ClusterConfigError(
                f"unknown cluster preset {str(name_or_path)!r}; known: {list_presets(directory)}"
            )
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ClusterConfigError(f"cannot read cluster file {path}: {e}") from e
    return cluster_from_mapping(spec, str(path))
