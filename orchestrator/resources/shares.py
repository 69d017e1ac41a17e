"""Shared nodes: cores, GPUs and memory handed out per job, as Slurm's ``select/cons_tres``.

On a cluster whose preset says ``shared: true`` a job gets what it asks for on each of its
nodes (cores, GPUs, memory) and other jobs may use the rest of those nodes. :class:`FreeShares`
is what is free on every node at some instant: core and GPU indices as bit masks, memory in MB,
and their counts in arrays (so the nodes a request fits on are found with a few vector
operations). Like the allocator, it does no I/O and reads no clock.

Placement (:meth:`FreeShares.place`):

* ``exclusive`` requests take whole free nodes, placed by :func:`find_block` (so a tree keeps
  its switch-local placement).
* Other requests go where they leave the least free: best fit on GPUs, then cores, then
  memory, then the lowest node index, so that whole nodes stay free for whole-node jobs. A job
  of ``n`` nodes on a tree takes them under one leaf switch when one holds ``n`` fitting nodes
  (the leaf with the fewest, as for whole nodes), else the ``n`` best-fitting nodes anywhere.
* On each node the job gets the lowest free core and GPU indices (all of a one-node job's GPUs
  are on its one node).

A request without memory gets the node's memory in proportion to the cores it asks for (Slurm's
``DefMemPerCPU`` set to memory / cores), so memory never blocks a node whose cores are free.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from orchestrator.resources.allocator import BoolArray, find_block
from orchestrator.resources.cluster import Cluster
from orchestrator.resources.request import JobRequest
from orchestrator.resources.topology import BaseTopology, Block, NodeArray, NodeShare, TreeTopology

__all__ = ["FreeShares", "NodePool", "default_memory_mb"]

CountArray = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class NodePool:
    """What each node of a shared cluster has, and which nodes each partition holds."""

    topology: BaseTopology
    cpus: CountArray
    gpus: CountArray
    mem: CountArray
    partitions: dict[str, BoolArray]
    """Node mask per partition name; "" is the default partition."""

    @classmethod
    def of(cls, cluster: Cluster) -> NodePool:
        size = cluster.size
        cpus = np.zeros(size, np.int64)
        gpus = np.zeros(size, np.int64)
        mem = np.zeros(size, np.int64)
        partitions: dict[str, BoolArray] = {}
        for group in cluster.groups:
            cpus[group.nodes] = group.node.cpus
            gpus[group.nodes] = group.node.gpus
            mem[group.nodes] = group.node.memory_mb
            mask = np.zeros(size, dtype=bool)
            mask[group.nodes] = True
            partitions[group.name] = mask
        partitions[""] = partitions[cluster.groups[0].name]
        return cls(cluster.topology, cpus, gpus, mem, partitions)

    def whole(self, node: int) -> NodeShare:
        """All of node ``node``."""
        return NodeShare(
            tuple(range(int(self.cpus[node]))),
            tuple(range(int(self.gpus[node]))),
            int(self.mem[node]),
        )


def default_memory_mb(request: JobRequest, node_cpus: int, node_mem: int) -> int:
    """The memory a request gets on a node of ``node_cpus`` cores and ``node_mem`` MB."""
    if request.mem_per_node_mb:
        return request.mem_per_node_mb
    return math.ceil(node_mem * request.cpus_on_node / node_cpus) if node_cpus else 0


def _bits(indices: tuple[int, ...]) -> int:
    mask = 0
    for i in indices:
        mask |= 1 << i
    return mask


def _lowest(mask: int, count: int) -> tuple[int, ...]:
    """The ``count`` lowest set bits of ``mask`` (there are at least that many)."""
    out: list[int] = []
    while len(out) < count:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return tuple(out)


class FreeShares:
    """What is free on each node of a shared cluster.

    Args:
        pool: The cluster's nodes.
        usable: Nodes that take work (None: all); the others have nothing free.
    """

    __slots__ = ("cores", "gpu_masks", "mem", "n_cores", "n_gpus", "pool")

    def __init__(self, pool: NodePool, usable: BoolArray | None = None) -> None:
        self.pool = pool
        ok = np.ones(pool.cpus.size, dtype=bool) if usable is None else usable
        self.n_cores: CountArray = np.where(ok, pool.cpus, 0)
        self.n_gpus: CountArray = np.where(ok, pool.gpus, 0)
        self.mem: CountArray = np.where(ok, pool.mem, 0)
        self.cores: list[int] = [(1 << int(c)) - 1 for c in self.n_cores]
        self.gpu_masks: list[int] = [(1 << int(g)) - 1 for g in self.n_gpus]

    # -- state ---------------------------------------------------------------------------

    def copy(self) -> FreeShares:
        other = FreeShares.__new__(FreeShares)
        other.pool = self.pool
        other.n_cores, other.n_gpus, other.mem = (
            self.n_cores.copy(),
            self.n_gpus.copy(),
            self.mem.copy(),
        )
        other.cores, other.gpu_masks = list(self.cores), list(self.gpu_masks)
        return other

    def intersect(self, other: FreeShares) -> FreeShares:
        """What is free in both."""
        both = self.copy()
        both.cores = [a & b for a, b in zip(self.cores, other.cores, strict=True)]
        both.gpu_masks = [a & b for a, b in zip(self.gpu_masks, other.gpu_masks, strict=True)]
        both.n_cores = np.array([m.bit_count() for m in both.cores], np.int64)
        both.n_gpus = np.array([m.bit_count() for m in both.gpu_masks], np.int64)
        both.mem = np.minimum(self.mem, other.mem)
        return both

    def without(self, nodes: Iterable[int]) -> FreeShares:
        """A copy with nothing free on ``nodes`` (down or drained)."""
        other = self.copy()
        for node in nodes:
            other.cores[node] = other.gpu_masks[node] = 0
            other.n_cores[node] = other.n_gpus[node] = other.mem[node] = 0
        return other

    def shares_of(self, block: Block) -> tuple[NodeShare, ...]:
        """What ``block`` holds on each node (whole nodes for a block without shares)."""
        if block.shares is not None:
            return block.shares
        return tuple(self.pool.whole(int(n)) for n in block.nodes)

    def can_take(self, block: Block) -> bool:
        """Every core, GPU and MB of ``block`` is free."""
        for node, share in zip(block.nodes.tolist(), self.shares_of(block), strict=True):
            if (
                _bits(share.cpus) & ~self.cores[node]
                or _bits(share.gpus) & ~self.gpu_masks[node]
                or share.mem_mb > self.mem[node]
            ):
                return False
        return True

    def take(self, block: Block) -> None:
        for node, share in zip(block.nodes.tolist(), self.shares_of(block), strict=True):
            self.cores[node] &= ~_bits(share.cpus)
            self.gpu_masks[node] &= ~_bits(share.gpus)
            self.n_cores[node] = self.cores[node].bit_count()
            self.n_gpus[node] = self.gpu_masks[node].bit_count()
            self.mem[node] -= share.mem_mb

    def give(self, block: Block) -> None:
        for node, share in zip(block.nodes.tolist(), self.shares_of(block), strict=True):
            self.cores[node] |= _bits(share.cpus)
            self.gpu_masks[node] |= _bits(share.gpus)
            self.n_cores[node] = self.cores[node].bit_count()
            self.n_gpus[node] = self.gpu_masks[node].bit_count()
            self.mem[node] += share.mem_mb

    @property
    def free_count(self) -> int:
        """Nodes with a free core (an upper bound on the nodes a request can use)."""
        return int(np.count_nonzero(self.n_cores))

    def idle(self) -> BoolArray:
        """Nodes with nothing in use."""
        pool = self.pool
        idle: BoolArray = (
            (self.n_cores == pool.cpus) & (self.n_gpus == pool.gpus) & (self.mem == pool.mem)
        )
        return idle

    def idle_at(self, nodes: NodeArray) -> BoolArray:
        """For each of ``nodes``, whether it has nothing in use: what :meth:`idle` says for
        them, without a pass over every node (a release on a large machine)."""
        pool = self.pool
        idle: BoolArray = (
            (self.n_cores[nodes] == pool.cpus[nodes])
            & (self.n_gpus[nodes] == pool.gpus[nodes])
            & (self.mem[nodes] == pool.mem[nodes])
        )
        return idle

    # -- placement -----------------------------------------------------------------------

    def place(self, request: JobRequest) -> Block | None:
        """Where ``request`` fits now (see the module notes), or None."""
        pool = self.pool
        mask = pool.partitions.get(request.partition)
        if mask is None:
            return None
        n = request.node_count
        if request.exclusive:
            found = find_block(pool.topology, self.idle() & mask, JobRequest(nodes=n))
            if found is None:
                return None
            shares = tuple(pool.whole(int(i)) for i in found.nodes)
            return Block(nodes=found.nodes, switches=found.switches, shares=shares)
        cpus, gpus = request.cpus_on_node, request.gpus_on_node
        if request.mem_per_node_mb:
            mem_need = np.full(pool.mem.size, request.mem_per_node_mb, np.int64)
        else:
            safe = np.maximum(pool.cpus, 1)
            mem_need = -(-pool.mem * cpus // safe)
        fits = mask & (self.n_cores >= cpus) & (self.n_gpus >= gpus) & (self.mem >= mem_need)
        candidates = np.flatnonzero(fits)
        if candidates.size < n:
            return None
        # Best fit: fewest GPUs, then cores, then MB left; np.lexsort sorts by the last key
        # first, and is stable, so equal nodes stay in index order.
        order = np.lexsort(
            (
                self.mem[candidates] - mem_need[candidates],
                self.n_cores[candidates] - cpus,
                self.n_gpus[candidates] - gpus,
            )
        )
        ranked = candidates[order]
        chosen = self._under_one_switch(ranked, n)
        nodes = np.sort(chosen).astype(np.int64)
        shares = tuple(
            NodeShare(
                _lowest(self.cores[i], cpus), _lowest(self.gpu_masks[i], gpus), int(mem_need[i])
            )
            for i in nodes.tolist()
        )
        return Block(nodes=nodes, shares=shares)

    def _under_one_switch(self, ranked: NodeArray, n: int) -> NodeArray:
        topo = self.pool.topology
        if n == 1 or not isinstance(topo, TreeTopology):
            return ranked[:n]
        leaf_of = topo.leaf_of[ranked]
        counts = np.bincount(leaf_of, minlength=len(topo.leaves))
        holding = np.flatnonzero(counts >= n)
        if holding.size == 0:
            return ranked[:n]
        leaf = int(holding[np.argmin(counts[holding])])
        chosen: NodeArray = ranked[leaf_of == leaf][:n]
        return chosen
