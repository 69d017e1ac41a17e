"""Free-resource snapshots the scheduler core reasons with during one pass.

Two models share one small interface, so the backfilling code is written once:

* :class:`CountCapacity` for flat clusters, where nodes are interchangeable: a count. Reservations
  and future profiles are counts too, which is exact for a flat machine and much faster.
* :class:`MaskCapacity` for tree and torus clusters: a free mask, and placements are real
  :class:`Block` s found by the allocator, so a reservation holds *specific* nodes (a switch, a
  sub-box) that a backfilled job must not take.
* :class:`SharedCapacity` for clusters that share nodes: the cores, GPUs and memory free on
  every node (:class:`~orchestrator.resources.shares.FreeShares`), so a reservation holds
  specific cores and GPUs, not just nodes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Self

import numpy as np

from orchestrator.resources.allocator import BoolArray, find_block
from orchestrator.resources.request import JobRequest
from orchestrator.resources.shares import FreeShares
from orchestrator.resources.topology import BaseTopology, Block, FlatTopology

__all__ = [
    "BaseCapacity",
    "CountCapacity",
    "FreeResources",
    "MaskCapacity",
    "Placement",
    "SharedCapacity",
    "capacity_for",
]

Placement = int | Block
"""A node count (count model) or a concrete block (mask model)."""


class BaseCapacity(ABC):
    """Free resources at some instant. Methods never touch the caller's arrays."""

    @abstractmethod
    def place(self, request: JobRequest) -> Placement | None:
        """Where ``request`` would go in this capacity, or None if it does not fit."""

    @abstractmethod
    def take(self, placement: Placement) -> None:
        """Mark ``placement`` used."""

    @abstractmethod
    def give(self, block: Block) -> None:
        """Return what a running job holds (for future profiles)."""

    @abstractmethod
    def intersect(self, other: Self) -> Self:
        """What is free in both."""

    @abstractmethod
    def copy(self) -> Self: ...

    @property
    @abstractmethod
    def free_count(self) -> int: ...


class CountCapacity(BaseCapacity):
    """Interchangeable nodes: only the number of free nodes matters."""

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count

    def place(self, request: JobRequest) -> Placement | None:
        n = request.node_count
        return n if n <= self.count else None

    def take(self, placement: Placement) -> None:
        self.count -= placement if isinstance(placement, int) else placement.size

    def give(self, block: Block) -> None:
        self.count += block.size

    def intersect(self, other: CountCapacity) -> CountCapacity:
        return CountCapacity(min(self.count, other.count))

    def copy(self) -> CountCapacity:
        return CountCapacity(self.count)

    @property
    def free_count(self) -> int:
        return self.count


class MaskCapacity(BaseCapacity):
    """Specific free nodes of a tree or torus; placements come from the allocator."""

    __slots__ = ("_cache", "_count", "free", "topology")

    def __init__(self, topology: BaseTopology, free: BoolArray) -> None:
        self.topology = topology
        self.free = free
        # Derived from ``free`` (allocator tables, the free count); valid until the next change.
        self._cache: dict[str, object] = {}
        self._count: int | None = None

    def place(self, request: JobRequest) -> Placement | None:
        return find_block(self.topology, self.free, request, self._cache)

    def take(self, placement: Placement) -> None:
        assert isinstance(placement, Block)
        self.free[placement.nodes] = False
        self._cache.clear()
        self._count = None

    def give(self, block: Block) -> None:
        self.free[block.nodes] = True
        self._cache.clear()
        self._count = None

    def intersect(self, other: MaskCapacity) -> MaskCapacity:
        return MaskCapacity(self.topology, self.free & other.free)

    def copy(self) -> MaskCapacity:
        return MaskCapacity(self.topology, self.free.copy())

    @property
    def free_count(self) -> int:
        if self._count is None:
            self._count = int(np.count_nonzero(self.free))
        return self._count


class SharedCapacity(BaseCapacity):
    """Cores, GPUs and memory free on each node of a cluster that shares nodes."""

    __slots__ = ("shares",)

    def __init__(self, shares: FreeShares) -> None:
        self.shares = shares

    def place(self, request: JobRequest) -> Placement | None:
        return self.shares.place(request)

    def take(self, placement: Placement) -> None:
        assert isinstance(placement, Block)
        self.shares.take(placement)

    def give(self, block: Block) -> None:
        self.shares.give(block)

    def intersect(self, other: SharedCapacity) -> SharedCapacity:
        return SharedCapacity(self.shares.intersect(other.shares))

    def copy(self) -> SharedCapacity:
        return SharedCapacity(self.shares.copy())

    @property
    def free_count(self) -> int:
        return self.shares.free_count


FreeResources = BoolArray | FreeShares
"""What the scheduler is told is free: a mask of free nodes (whole-node clusters), or what is
free on each node (clusters that share nodes)."""


def capacity_for(topology: BaseTopology, free: FreeResources) -> BaseCapacity:
    """The capacity model that fits ``topology`` and ``free`` (copied)."""
    if isinstance(free, FreeShares):
        return SharedCapacity(free.copy())
    if isinstance(topology, FlatTopology):
        return CountCapacity(int(np.count_nonzero(free)))
    return MaskCapacity(topology, free.copy())
