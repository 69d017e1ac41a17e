"""Allocator properties (hypothesis), checked against brute-force oracles on small machines."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.resources.allocator import find_block
from orchestrator.resources.cluster import load_cluster
from orchestrator.resources.request import JobRequest, Shape, ShapeMode
from orchestrator.resources.topology import FlatTopology, Torus3DTopology, TreeTopology


@st.composite
def torus_case(draw: st.DrawFn) -> tuple[Torus3DTopology, np.ndarray, Shape]:
    unit = tuple(draw(st.sampled_from([1, 1, 2])) for _ in range(3))
    dims = tuple(u * draw(st.integers(1, 4)) for u in unit)
    topo = Torus3DTopology(list(dims), list(unit))
    free = np.array(draw(st.lists(st.booleans(), min_size=topo.size, max_size=topo.size)))
    rank = draw(st.integers(1, 3))
    extents = tuple(draw(st.integers(1, max(dims))) for _ in range(rank))
    mode = draw(st.sampled_from([ShapeMode.TORUS, ShapeMode.MESH]))
    strict = draw(st.booleans())
    shape = Shape(extents, mode, strict)
    return topo, free, shape


def _cells(shape: Shape, unit: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    bases = [shape.extents3] if shape.strict else list(itertools.permutations(shape.extents3))
    out = []
    for e in bases:
        c = tuple(-(-e[a] // unit[a]) for a in range(3))
        out.append((c[0], c[1], c[2]))
    return sorted(set(out))


def _oracle(
    topo: Torus3DTopology, free: np.ndarray, shape: Shape
) -> dict[tuple[tuple[int, ...], tuple[int, ...]], tuple[int, int]]:
    """Every free placement {(cell extents, cell origin): (cells held, cost)}, by brute force."""
    wrap = shape.mode is ShapeMode.TORUS
    unit = topo.unit if wrap else (1, 1, 1)
    grid_dims = tuple(d // u for d, u in zip(topo.dims, unit, strict=True))
    cube = free.reshape(topo.dims)
    cell_free = np.ones(grid_dims, dtype=bool)
    for idx in np.ndindex(*grid_dims):
        sl = tuple(slice(i * u, (i + 1) * u) for i, u in zip(idx, unit, strict=True))
        cell_free[idx] = cube[sl].all()

    def cell(p: tuple[int, ...]) -> bool | None:
        q = []
        for a in range(3):
            if wrap:
                q.append(p[a] % grid_dims[a])
            elif not 0 <= p[a] < grid_dims[a]:
                return None  # outside a mesh: counts as busy
            else:
                q.append(p[a])
        return bool(cell_free[tuple(q)])

    found: dict[tuple[tuple[int, ...], tuple[int, ...]], tuple[int, int]] = {}
    for ext in _cells(shape, unit):
        if any(e > d for e, d in zip(ext, grid_dims, strict=True)):
            continue
        ranges = [
            range(grid_dims[a]) if wrap else range(grid_dims[a] - ext[a] + 1) for a in range(3)
        ]
        for origin in itertools.product(*ranges):
            if wrap and any(ext[a] == grid_dims[a] and origin[a] for a in range(3)):
                continue
            box = [
                tuple(origin[a] + d[a] for a in range(3))
                for d in itertools.product(*(range(e) for e in ext))
            ]
            if not all(cell(p) for p in box):
                continue
            lo = [
                origin[a] - 1 if (not wrap or min(ext[a] + 2, grid_dims[a]) > ext[a]) else origin[a]
                for a in range(3)
            ]
            size = [ext[a] + 2 if not wrap else min(ext[a] + 2, grid_dims[a]) for a in range(3)]
            grown = {
                tuple(lo[a] + d[a] for a in range(3))
                for d in itertools.product(*(range(s) for s in size))
            }
            inner = set(box)
            cost = sum(1 for p in grown if p not in inner and cell(p))
            found[(ext, tuple(origin))] = (ext[0] * ext[1] * ext[2], cost)
    return found


@settings(max_examples=300, deadline=None)
@given(torus_case())
def test_torus_box_properties(case: tuple[Torus3DTopology, np.ndarray, Shape]) -> None:
    topo, free, shape = case
    block = find_block(topo, free, JobRequest(shape=shape))
    oracle = _oracle(topo, free, shape)
    if block is None:
        assert not oracle, f"allocator found nothing, oracle found {oracle}"
        return
    assert oracle
    assert block.origin is not None and block.extents is not None
    # No overlap with busy nodes, and the nodes are exactly the described box.
    assert free[block.nodes].all()
    assert np.array_equal(block.nodes, topo.box_nodes(block.origin, block.extents))
    wrap = shape.mode is ShapeMode.TORUS
    unit = topo.unit if wrap else (1, 1, 1)
    cells = tuple(block.extents[a] // unit[a] for a in range(3))
    # Exact size: a permutation (only the given order with :strict) rounded up to whole units.
    assert cells in _cells(shape, unit)
    if shape.mode is ShapeMode.MESH:
        assert block.size == shape.volume
        # No wrap-around for a mesh: the box lies inside the machine.
        assert all(block.origin[a] + block.extents[a] <= topo.dims[a] for a in range(3))
    else:
        assert block.size >= shape.volume
        assert all(block.origin[a] % unit[a] == 0 for a in range(3))
    # Best by (nodes held, fragmentation cost), as the oracle computes it.
    origin_cells = tuple(block.origin[a] // unit[a] for a in range(3))
    assert oracle[(cells, origin_cells)] == min(oracle.values())


def test_torus_placement_uses_wraparound_only_for_torus() -> None:
    topo = Torus3DTopology([6, 1, 1])
    free = np.array([True, False, False, False, True, True])  # free: 4, 5, 0 (wrapping)
    block = find_block(topo, free, JobRequest(shape="3:torus"))
    assert block is not None and sorted(block.nodes.tolist()) == [0, 4, 5]
    assert block.origin == (4, 0, 0)
    assert find_block(topo, free, JobRequest(shape="3:mesh")) is None


def test_strict_forbids_axis_swap() -> None:
    topo = Torus3DTopology([4, 2, 1])
    free = np.ones(topo.size, dtype=bool)
    assert find_block(topo, free, JobRequest(shape="1x4:mesh:strict")) is None
    swapped = find_block(topo, free, JobRequest(shape="1x4:mesh"))
    assert swapped is not None and swapped.extents == (4, 1, 1)


def test_best_fit_prefers_snug_placement() -> None:
    # A 4x4x1 mesh with one busy corner region: a 2x2 box should sit against busy nodes/edges.
    topo = Torus3DTopology([4, 4, 1])
    free = np.ones(topo.size, dtype=bool)
    free[[topo.index(0, 0, 0), topo.index(0, 1, 0)]] = False
    block = find_block(topo, free, JobRequest(shape="2x2:mesh"))
    assert block is not None
    # Every placement touching the corner or edges costs less than the centre one.
    assert block.origin != (1, 1, 0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.booleans(), min_size=64, max_size=64),
    st.integers(1, 64),
)
def test_noncont_takes_exactly_n_free_nodes(mask: list[bool], n: int) -> None:
    topo = Torus3DTopology([4, 4, 4])
    free = np.array(mask)
    for request in (JobRequest(nodes=n), JobRequest(shape=f"{n}:noncont")):
        block = find_block(topo, free, request) if n <= 64 else None
        if free.sum() < n:
            assert block is None
            continue
        assert block is not None
        assert block.size == n
        assert len(set(block.nodes.tolist())) == n
        assert free[block.nodes].all()


def test_noncont_is_compact_on_an_empty_torus() -> None:
    topo = Torus3DTopology([8, 8, 8])
    block = find_block(topo, np.ones(topo.size, dtype=bool), JobRequest(nodes=8))
    assert block is not None
    coords = np.array([topo.coords(int(i)) for i in block.nodes])
    assert (coords.max(axis=0) - coords.min(axis=0)).max() <= 1  # a 2x2x2 cube


@settings(max_examples=300, deadline=None)
@given(st.lists(st.booleans(), min_size=16, max_size=16), st.integers(1, 16))
def test_tree_best_fit(mask: list[bool], n: int) -> None:
    cluster = load_cluster("slurm16")
    topo = cluster.topology
    assert isinstance(topo, TreeTopology)
    free = np.array(mask)
    block = find_block(topo, free, JobRequest(nodes=n))
    if free.sum() < n:
        assert block is None
        return
    assert block is not None
    assert block.size == n and free[block.nodes].all()
    per_leaf = [int(free[nodes].sum()) for nodes in topo.leaf_nodes]
    fitting = [c for c in per_leaf if c >= n]
    if fitting:
        # One leaf switch, and the one with the fewest free nodes that fits (best fit).
        assert len(block.switches) == 1
        used = [leaf.name for leaf in topo.leaves].index(block.switches[0])
        assert per_leaf[used] == min(fitting)
    else:
        assert len(block.switches) == 2


def test_tree_uses_fewest_leaves_on_fat_tree() -> None:
    cluster = load_cluster("fattree1024")
    topo = cluster.topology
    free = np.ones(cluster.size, dtype=bool)
    block = find_block(topo, free, JobRequest(nodes=70))
    assert block is not None and block.size == 70
    assert len(block.switches) == 3  # 32 + 32 + 6
    leaves_of = {topo.leaf_of[int(i)] for i in block.nodes}  # type: ignore[attr-defined]
    assert len(leaves_of) == 3
    # All under one aggregation switch (the lowest switch that holds 70 nodes).
    assert {name[:4] for name in block.switches} == {"leaf"}
    assert max(int(s[4:]) for s in block.switches) <= 8


def test_flat_takes_lowest_free_nodes() -> None:
    free = np.array([False, True, False, True, True])
    block = find_block(FlatTopology(5), free, JobRequest(nodes=2))
    assert block is not None and block.nodes.tolist() == [1, 3]
    assert find_block(FlatTopology(5), free, JobRequest(nodes=4)) is None


def test_allocator_does_not_modify_its_input() -> None:
    topo = load_cluster("fugaku").topology
    free = np.ones(topo.size, dtype=bool)
    before = free.copy()
    for request in (JobRequest(shape="4x6x16:torus"), JobRequest(nodes=100)):
        assert find_block(topo, free, request) is not None
    assert np.array_equal(free, before)


@pytest.mark.parametrize("shape", ["4x6x16:torus", "8x8x8:mesh", "24x1x1:torus:strict"])
def test_fugaku_placements(shape: str) -> None:
    topo = load_cluster("fugaku").topology
    free = np.ones(topo.size, dtype=bool)
    rng = np.random.default_rng(0)
    free[rng.random(topo.size) < 0.2] = False
    free[: topo.size // 2] = True  # leave room for the box
    block = find_block(topo, free, JobRequest(shape=shape))
    assert block is not None
    assert free[block.nodes].all()


@st.composite
def long_torus_case(draw: st.DrawFn) -> tuple[Torus3DTopology, np.ndarray, Shape]:
    # Rings longer than the summed-volume table's periodic reach (reach < length).
    dims = (draw(st.integers(9, 14)), draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    topo = Torus3DTopology(list(dims))
    density = draw(st.floats(0.0, 0.5))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    free = rng.random(topo.size) >= density
    extents = (draw(st.integers(1, dims[0])), draw(st.integers(1, dims[1])))
    return topo, free, Shape(extents, ShapeMode.TORUS, draw(st.booleans()))


@settings(max_examples=150, deadline=None)
@given(long_torus_case())
def test_long_rings_match_the_oracle(case: tuple[Torus3DTopology, np.ndarray, Shape]) -> None:
    topo, free, shape = case
    block = find_block(topo, free, JobRequest(shape=shape))
    oracle = _oracle(topo, free, shape)
    if block is None:
        assert not oracle
        return
    assert block.origin is not None and block.extents is not None
    assert free[block.nodes].all()
    assert oracle[(block.extents, block.origin)] == min(oracle.values())
