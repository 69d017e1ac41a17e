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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.exceptions import ClusterConfigError, InvalidRequestError
from orchestrator.resources.hostlist import expand_hostlist
from orchestrator.resources.request import JobRequest, ShapeMode
from orchestrator.resources.topology import (
    BaseTopology,
    FlatTopology,
    NodeResources,
    Torus3DTopology,
    TreeTopology,
)

__all__ = ["PRESET_DIR", "Cluster", "list_presets", "load_cluster"]

PRESET_DIR = Path(__file__).resolve().parents[2] / "conf" / "cluster"


@dataclass(frozen=True)
class Cluster:
    """A named pool of nodes."""

    name: str
    topology: BaseTopology
    node: NodeResources = field(default_factory=NodeResources)

    @property
    def size(self) -> int:
        return self.topology.size

    def check_request(self, request: JobRequest) -> None:
        """Raise :class:`InvalidRequestError` when ``request`` can never run here."""
        topo = self.topology
        n = request.node_count
        if n > topo.size:
            field = "nodes" if request.nodes is not None else "shape"
            raise InvalidRequestError(
                field,
                request.nodes if request.nodes is not None else str(request.shape),
                f"asks for {n} nodes but cluster {self.name!r} has {topo.size}",
                str(min(topo.size, 4)) if field == "nodes" else "2x2x1",
            )
        cpus = request.tasks_per_node * request.cpus_per_task
        if cpus > self.node.cpus:
            raise InvalidRequestError(
                "cpus_per_task",
                request.cpus_per_task,
                f"{request.tasks_per_node} tasks x {request.cpus_per_task} CPUs = {cpus} "
                f"> {self.node.cpus} CPUs per node on {self.name!r}",
                str(max(1, self.node.cpus // request.tasks_per_node)),
            )
        gpus = request.tasks_per_node * request.gpus_per_task
        if gpus > self.node.gpus:
            raise InvalidRequestError(
                "gpus_per_task",
                request.gpus_per_task,
                f"{gpus} GPUs per node > {self.node.gpus} on {self.name!r}",
                str(self.node.gpus // request.tasks_per_node),
            )
        if self.node.memory_mb and request.mem_per_node_mb > self.node.memory_mb:
            raise InvalidRequestError(
                "mem_per_node_mb",
                request.mem_per_node_mb,
                f"more than the {self.node.memory_mb} MB a node of {self.name!r} has",
                str(self.node.memory_mb),
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
    return Cluster(name=str(spec.get("name", Path(source).stem)), topology=topo, node=node)


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
