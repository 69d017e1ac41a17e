"""Alpha-beta cost of the collectives a data-parallel step makes, per network topology.

A message of ``n`` bytes over one link costs ``alpha + n * beta`` (Hockney's model). The
all-reduce algorithms and their costs follow Thakur, Rabenseifner and Gropp (2005), "Optimization
of collective communication operations in MPICH"; the multi-dimensional ring is the one torus
machines use (a ring along each axis in turn, as on Tofu and on TPU pods):

- ring: ``2 (p-1) alpha + 2 (p-1)/p n beta``: bandwidth-optimal, latency linear in ``p``;
- recursive halving (reduce-scatter) then doubling (all-gather), Rabenseifner's algorithm:
  ``2 log2(p) alpha + 2 (p-1)/p n beta``, plus one extra exchange of the whole message each way
  when ``p`` is not a power of two;
- a ring per torus axis, reduce-scatter axis by axis then all-gather back:
  ``sum_i 2 (p_i - 1) alpha + 2 (1 - 1/p) n beta``; the latency term grows with the sum of the
  axis lengths, not their product, which is why it is the algorithm of a torus. The wrap-around
  links let each ring run both ways, halving the bandwidth term.

Everything here is pure arithmetic on floats: no I/O, cheap enough to evaluate at 80,000 nodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Link",
    "allreduce_time",
    "broadcast_time",
    "halving_doubling_allreduce",
    "ring_allreduce",
    "torus_allreduce",
    "torus_shape",
]


@dataclass(frozen=True)
class Link:
    """One network link in Hockney's model.

    Args:
        alpha_s: Start-up latency of one message, seconds.
        beta_s_per_byte: Inverse bandwidth, seconds per byte.
    """

    alpha_s: float
    beta_s_per_byte: float

    def __post_init__(self) -> None:
        if self.alpha_s < 0 or self.beta_s_per_byte < 0:
            raise ValueError(f"alpha and beta must be >= 0, got {self}")

    def message(self, nbytes: float) -> float:
        """Time to send one message of ``nbytes`` over this link."""
        return self.alpha_s + nbytes * self.beta_s_per_byte


def ring_allreduce(p: int, nbytes: float, link: Link) -> float:
    """Ring all-reduce: a reduce-scatter then an all-gather, ``p - 1`` steps each.

    >>> ring_allreduce(1, 1e6, Link(1e-6, 1e-9))
    0.0
    >>> round(ring_allreduce(4, 4e6, Link(1e-6, 1e-9)), 9)
    0.006006
    """
    if p <= 1:
        return 0.0
    return 2 * (p - 1) * link.alpha_s + 2 * (p - 1) / p * nbytes * link.beta_s_per_byte


def halving_doubling_allreduce(p: int, nbytes: float, link: Link) -> float:
    """Rabenseifner's all-reduce: recursive halving, then recursive doubling.

    A non-power-of-two ``p`` first folds the extra ranks into a power of two and unfolds them at
    the end (MPICH's scheme): one extra whole-message exchange each way.

    >>> round(halving_doubling_allreduce(4, 4e6, Link(1e-6, 1e-9)), 9)
    0.006004
    """
    if p <= 1:
        return 0.0
    pow2 = 1 << (p.bit_length() - 1)
    t = 2 * math.log2(pow2) * link.alpha_s + 2 * (pow2 - 1) / pow2 * nbytes * link.beta_s_per_byte
    if pow2 != p:
        t += 2 * link.message(nbytes)
    return t


def torus_allreduce(
    shape: Sequence[int], nbytes: float, link: Link, bidirectional: bool = True
) -> float:
    """All-reduce by a ring along each axis of a torus block in turn.

    Args:
        shape: The block's extent along each axis (axes of length 1 cost nothing).
        nbytes: Message size.
        link: One link's cost.
        bidirectional: Wrap-around links let each ring carry half the data each way.

    Returns:
        Seconds.

    >>> round(torus_allreduce([4], 4e6, Link(1e-6, 1e-9), bidirectional=False), 9)
    0.006006
    """
    p = math.prod(shape)
    if p <= 1:
        return 0.0
    latency = sum(2 * (q - 1) for q in shape if q > 1) * link.alpha_s
    bandwidth = 2 * (1 - 1 / p) * nbytes * link.beta_s_per_byte
    return latency + (bandwidth / 2 if bidirectional else bandwidth)


def torus_shape(n: int, dims: Sequence[int]) -> tuple[int, ...]:
    """The most compact block of at least ``n`` nodes inside a torus of ``dims``.

    Compact (near-cubic) blocks keep the sum of the axis lengths, hence the ring latency, small;
    the allocator places jobs on such blocks too. Axes fill smallest-first so the block stays
    balanced.

    Raises:
        ValueError: When ``n`` exceeds the torus.

    >>> torus_shape(8, [4, 4, 4])
    (2, 2, 2)
    >>> torus_shape(1, [48, 69, 48])
    (1, 1, 1)
    """
    total = math.prod(dims)
    if n < 1 or n > total:
        raise ValueError(f"{n} nodes do not fit a torus of {list(dims)} ({total} nodes)")
    shape = [1] * len(dims)
    while math.prod(shape) < n:
        # Grow the shortest axis that still has room (ties: the first).
        grow = min((i for i in range(len(dims)) if shape[i] < dims[i]), key=lambda i: shape[i])
        shape[grow] += 1
    # Shrink axes while the block still holds n (the growth loop can overshoot).
    for i in sorted(range(len(dims)), key=lambda i: -shape[i]):
        while shape[i] > 1 and math.prod(shape) // shape[i] * (shape[i] - 1) >= n:
            shape[i] -= 1
    return tuple(shape)


def broadcast_time(p: int, nbytes: float, link: Link) -> float:
    """One rank's buffer to all: the cheaper of a binomial tree and scatter + all-gather.

    >>> broadcast_time(1, 1e6, Link(1e-6, 1e-9))
    0.0
    """
    if p <= 1:
        return 0.0
    steps = math.ceil(math.log2(p))
    tree = steps * link.message(nbytes)
    scatter_allgather = (steps + p - 1) * link.alpha_s + 2 * (p - 1) / p * nbytes * (
        link.beta_s_per_byte
    )
    return min(tree, scatter_allgather)


def allreduce_time(
    topology: str, p: int, nbytes: float, link: Link, dims: Sequence[int] | None = None
) -> float:
    """The all-reduce a job of ``p`` nodes uses on a topology, and its time.

    Args:
        topology: ``flat`` (one switch: ring), ``tree`` (switch tree: the cheaper of ring and
            halving/doubling), ``torus3d`` (a ring per axis on a compact block).
        p: Nodes (one rank each).
        nbytes: Message size.
        link: One link's cost.
        dims: The torus' node grid (``torus3d`` only).

    Returns:
        Seconds.

    Raises:
        ValueError: For an unknown topology, or a torus without ``dims``.
    """
    if topology == "flat":
        return ring_allreduce(p, nbytes, link)
    if topology == "tree":
        return min(ring_allreduce(p, nbytes, link), halving_doubling_allreduce(p, nbytes, link))
    if topology == "torus3d":
        if dims is None:
            raise ValueError("a torus3d all-reduce needs the torus dims")
        return torus_allreduce(torus_shape(p, dims), nbytes, link)
    raise ValueError(f"unknown topology {topology!r}: expected flat, tree or torus3d")
