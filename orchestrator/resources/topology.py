"""Cluster topologies: ``flat``, ``tree`` (switch hierarchy) and ``torus3d``.

A topology numbers its nodes ``0 .. size-1``; everything else (allocator, scheduler, simulator)
works on those indices and on boolean *free masks* (``mask[i]`` is True when node ``i`` is free).
Names are only for people and for batch systems.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from orchestrator.exceptions import ClusterConfigError
from orchestrator.resources.hostlist import expand_hostlist

__all__ = [
    "BaseTopology",
    "Block",
    "FlatTopology",
    "NodeArray",
    "NodeResources",
    "NodeShare",
    "Switch",
    "Torus3DTopology",
    "TreeTopology",
]

NodeArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class NodeResources:
    """What one node offers (all nodes of one node group are alike)."""

    cpus: int = 1
    gpus: int = 0
    memory_mb: int = 0
    gpu_type: str = ""
    """The GPU model where it matters (``H100``); for people and reports only."""

    def __post_init__(self) -> None:
        if not isinstance(self.gpu_type, str):
            raise ClusterConfigError(f"node resource gpu_type={self.gpu_type!r} must be a string")
        for name in ("cpus", "gpus", "memory_mb"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0 or (name == "cpus" and value == 0):
                raise ClusterConfigError(
                    f"node resource {name}={value!r} must be a non-negative integer"
                    + (" (at least 1)" if name == "cpus" else "")
                )


@dataclass(frozen=True, slots=True)
class NodeShare:
    """What a job holds on one node of a shared cluster: core and GPU indices, memory."""

    cpus: tuple[int, ...]
    gpus: tuple[int, ...] = ()
    mem_mb: int = 0


@dataclass(frozen=True, eq=False, slots=True)
class Block:
    """The nodes a job holds.

    Attributes:
        nodes: Sorted node indices.
        origin: For a torus sub-box, its lowest corner (before wrap-around).
        extents: For a torus sub-box, its size along x, y, z (the box may wrap around).
        switches: For a tree, the leaf switches the block spans.
        shares: On a shared cluster, what the job holds on each of ``nodes`` (same order);
            None on whole-node clusters, where a job holds its nodes entirely.
    """

    nodes: NodeArray
    origin: tuple[int, int, int] | None = None
    extents: tuple[int, int, int] | None = None
    switches: tuple[str, ...] = ()
    shares: tuple[NodeShare, ...] | None = None

    @property
    def size(self) -> int:
        return int(self.nodes.size)

    def describe(self) -> str:
        """A short human description, e.g. ``4 nodes @ (0,3,2)+2x3x2``."""
        text = f"{self.size} nodes"
        if self.origin is not None and self.extents is not None:
            o, e = self.origin, self.extents
            text += f" @ ({o[0]},{o[1]},{o[2]})+{e[0]}x{e[1]}x{e[2]}"
        if self.switches:
            text += " on " + ",".join(self.switches)
        return text


class BaseTopology(ABC):
    """How nodes are connected. Subclasses are immutable after construction."""

    kind: ClassVar[str]

    @property
    @abstractmethod
    def size(self) -> int:
        """Number of nodes."""

    @abstractmethod
    def node_name(self, index: int) -> str:
        """The name of node ``index``."""

    @cached_property
    def node_names(self) -> tuple[str, ...]:
        return tuple(self.node_name(i) for i in range(self.size))

    @cached_property
    def _index_by_name(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.node_names)}

    def index_of(self, name: str) -> int:
        """The index of the node called ``name``.

        Raises:
            KeyError: when no node has that name.
        """
        try:
            return self._index_by_name[name]
        except KeyError:
            raise KeyError(f"no node named {name!r} in this {self.kind} topology") from None

    def describe(self) -> str:
        return f"{self.kind}, {self.size} nodes"


class FlatTopology(BaseTopology):
    """N interchangeable nodes (one machine, a Ray cluster)."""

    kind = "flat"

    def __init__(
        self, nodes: int, names: Sequence[str] | None = None, prefix: str = "node"
    ) -> None:
        if not isinstance(nodes, int) or nodes < 1:
            raise ClusterConfigError(f"flat topology needs nodes >= 1, got {nodes!r}")
        if names is not None and len(names) != nodes:
            raise ClusterConfigError(f"flat topology: {len(names)} names for {nodes} nodes")
        self._size = nodes
        self._names = tuple(names) if names is not None else None
        self._prefix = prefix

    @property
    def size(self) -> int:
        return self._size

    def node_name(self, index: int) -> str:
        return self._names[index] if self._names is not None else f"{self._prefix}{index}"


@dataclass(frozen=True)
class Switch:
    """One switch of a tree: a leaf has nodes, an inner switch has child switches."""

    name: str
    nodes: tuple[str, ...] = ()
    children: tuple[str, ...] = field(default=())

    @property
    def is_leaf(self) -> bool:
        return bool(self.nodes)


def _switches_by_name(switches: Sequence[Switch]) -> dict[str, Switch]:
    """Switches by name; each defined once, each a leaf or an inner switch."""
    if not switches:
        raise ClusterConfigError("tree topology needs at least one switch")
    by_name: dict[str, Switch] = {}
    for sw in switches:
        if sw.name in by_name:
            raise ClusterConfigError(f"switch {sw.name!r} is defined twice")
        if bool(sw.nodes) == bool(sw.children):
            raise ClusterConfigError(
                f"switch {sw.name!r} must list either nodes (a leaf) or switches (inner)"
            )
        by_name[sw.name] = sw
    return by_name


def _parents(switches: Sequence[Switch], by_name: Mapping[str, Switch]) -> dict[str, str]:
    """Switch -> its parent switch; every child known, none with two parents."""
    parent: dict[str, str] = {}
    for sw in switches:
        for child in sw.children:
            if child not in by_name:
                raise ClusterConfigError(f"switch {sw.name!r} lists unknown switch {child!r}")
            if child in parent:
                raise ClusterConfigError(f"switch {child!r} has two parents")
            parent[child] = sw.name
    return parent


class TreeTopology(BaseTopology):
    """A switch hierarchy as Slurm's ``topology.conf`` describes it.

    Leaf switches list nodes; inner switches list child switches. Every node sits under exactly
    one leaf switch, and the switches form one tree (a single root).
    """

    kind = "tree"

    def __init__(self, switches: Sequence[Switch]) -> None:
        by_name = _switches_by_name(switches)
        names: list[str] = []
        leaf_of: list[int] = []
        leaves = [sw for sw in switches if sw.is_leaf]
        for li, leaf in enumerate(leaves):
            for node in leaf.nodes:
                names.append(node)
                leaf_of.append(li)
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ClusterConfigError(f"nodes under more than one leaf switch: {dup[:5]}")
        parent = _parents(switches, by_name)
        roots = [sw.name for sw in switches if sw.name not in parent]
        if len(roots) != 1:
            raise ClusterConfigError(f"tree topology needs exactly one root switch, found {roots}")
        self.switches: Mapping[str, Switch] = by_name
        self.root = roots[0]
        self.parent: Mapping[str, str] = parent
        self.leaves: tuple[Switch, ...] = tuple(leaves)
        self._names = tuple(names)
        self.leaf_of: NodeArray = np.asarray(leaf_of, dtype=np.int64)
        self.leaf_nodes: tuple[NodeArray, ...] = tuple(
            np.flatnonzero(self.leaf_of == li).astype(np.int64) for li in range(len(leaves))
        )
        # Leaf indices under every switch, for the "lowest switch that fits" search.
        under: dict[str, list[int]] = {name: [] for name in by_name}
        for li, leaf in enumerate(leaves):
            name: str | None = leaf.name
            while name is not None:
                under[name].append(li)
                name = parent.get(name)
        self.leaves_under: Mapping[str, tuple[int, ...]] = {k: tuple(v) for k, v in under.items()}
        depth: dict[str, int] = {}
        for name in by_name:
            d, cur = 0, name
            while cur in parent:
                cur, d = parent[cur], d + 1
            depth[name] = d
        self.depth: Mapping[str, int] = depth

    @property
    def size(self) -> int:
        return len(self._names)

    def node_name(self, index: int) -> str:
        return self._names[index]

    def describe(self) -> str:
        return f"tree, {self.size} nodes under {len(self.leaves)} leaf switches"

    @classmethod
    def from_spec(cls, specs: Sequence[Mapping[str, str]]) -> TreeTopology:
        """Build from topology.conf-like records ``{name, nodes}`` or ``{name, switches}``."""
        switches = []
        for i, spec in enumerate(specs):
            unknown = set(spec) - {"name", "nodes", "switches"}
            if unknown or "name" not in spec:
                raise ClusterConfigError(
                    f"switch #{i}: expected keys name and nodes|switches, got {sorted(spec)}"
                )
            try:
                nodes = tuple(expand_hostlist(spec["nodes"])) if "nodes" in spec else ()
                children = tuple(expand_hostlist(spec["switches"])) if "switches" in spec else ()
            except ValueError as e:
                raise ClusterConfigError(f"switch {spec['name']!r}: {e}") from e
            switches.append(Switch(name=str(spec["name"]), nodes=nodes, children=children))
        return cls(switches)


class Torus3DTopology(BaseTopology):
    """An X x Y x Z torus (wrap-around on every axis), as Fugaku's Tofu-D.

    Node ``(x, y, z)`` has index ``(x * Y + y) * Z + z``. An optional allocation ``unit`` (PJM's
    2 x 3 x 2 Tofu unit) makes ``:torus`` requests take whole, aligned units.
    """

    kind = "torus3d"

    def __init__(self, dims: Sequence[int], unit: Sequence[int] | None = None) -> None:
        if len(dims) != 3 or any(not isinstance(d, int) or d < 1 for d in dims):
            raise ClusterConfigError(f"torus3d dims must be three positive integers, got {dims!r}")
        self.dims: tuple[int, int, int] = (int(dims[0]), int(dims[1]), int(dims[2]))
        if unit is None:
            unit = (1, 1, 1)
        if len(unit) != 3 or any(not isinstance(u, int) or u < 1 for u in unit):
            raise ClusterConfigError(f"torus3d unit must be three positive integers, got {unit!r}")
        self.unit: tuple[int, int, int] = (int(unit[0]), int(unit[1]), int(unit[2]))
        for axis, (d, u) in enumerate(zip(self.dims, self.unit, strict=True)):
            if d % u:
                raise ClusterConfigError(
                    f"torus3d: dims[{axis}]={d} is not a multiple of unit[{axis}]={u}"
                )

    @property
    def size(self) -> int:
        x, y, z = self.dims
        return x * y * z

    @property
    def unit_grid(self) -> tuple[int, int, int]:
        """The torus measured in allocation units."""
        return (
            self.dims[0] // self.unit[0],
            self.dims[1] // self.unit[1],
            self.dims[2] // self.unit[2],
        )

    def coords(self, index: int) -> tuple[int, int, int]:
        _, y_dim, z_dim = self.dims
        x, rest = divmod(index, y_dim * z_dim)
        y, z = divmod(rest, z_dim)
        return (x, y, z)

    def index(self, x: int, y: int, z: int) -> int:
        _, y_dim, z_dim = self.dims
        return (x * y_dim + y) * z_dim + z

    def node_name(self, index: int) -> str:
        x, y, z = self.coords(index)
        return f"t{x}-{y}-{z}"

    def box_nodes(self, origin: Sequence[int], extents: Sequence[int]) -> NodeArray:
        """Indices of the box ``origin + extents``, wrapping around every axis, sorted."""
        axes = [
            (np.arange(o, o + e) % d) for o, e, d in zip(origin, extents, self.dims, strict=True)
        ]
        _, y_dim, z_dim = self.dims
        idx = (axes[0][:, None, None] * y_dim + axes[1][None, :, None]) * z_dim + axes[2][
            None, None, :
        ]
        return np.sort(idx.ravel()).astype(np.int64)

    @cached_property
    def curve_rank(self) -> NodeArray:
        """Each node's position along a Morton (Z-order) curve: nearby ranks are nearby nodes.

        Used to pick compact sets of free nodes for ``:noncont`` and plain node-count requests.
        """
        x_dim, y_dim, z_dim = self.dims
        xs, ys, zs = np.meshgrid(
            np.arange(x_dim), np.arange(y_dim), np.arange(z_dim), indexing="ij"
        )
        code = np.zeros(self.size, dtype=np.int64)
        flat = [a.ravel().astype(np.int64) for a in (xs, ys, zs)]
        for bit in range(int(max(self.dims)).bit_length()):
            for axis, values in enumerate(flat):
                code |= ((values >> bit) & 1) << (3 * bit + axis)
        rank = np.empty(self.size, dtype=np.int64)
        rank[np.argsort(code, kind="stable")] = np.arange(self.size)
        return rank

    def describe(self) -> str:
        x, y, z = self.dims
        text = f"torus3d {x}x{y}x{z} = {self.size} nodes"
        if self.unit != (1, 1, 1):
            text += " (unit {}x{}x{})".format(*self.unit)
        return text
