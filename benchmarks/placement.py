"""Placement query latency on the Fugaku torus (158,976 nodes) at 50/70/90 % occupancy.

The machine is filled with blocks of the synthetic torus workload (orchestrator.simulate.workload)
until the target share of nodes is busy; then the time of one ``find_block`` query (from the free
mask alone: nothing cached, as the daemon or a fresh scheduling pass calls it) is measured for
requests drawn from the same distribution. Prints median and p99 per placement mode.

    .venv/bin/python benchmarks/placement.py [--queries 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from orchestrator.resources.allocator import find_block
from orchestrator.resources.cluster import load_cluster
from orchestrator.simulate.workload import synthetic_torus_workload


def mode_of(request: object) -> str:
    shape = getattr(request, "shape", None)
    if shape is None:
        return "nodes"
    return str(shape.mode.value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cluster = load_cluster("fugaku")
    topo = cluster.topology
    pool = synthetic_torus_workload(cluster, 20_000, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    print(f"{topo.describe()}; {args.queries} queries per occupancy level")
    print(f"{'occupancy':>9} {'mode':>7} {'n':>5} {'median ms':>10} {'p99 ms':>8} {'found':>6}")
    for target in (0.5, 0.7, 0.9):
        free = np.ones(topo.size, dtype=bool)
        i = 0
        # Fill: place workload jobs in order until the target share is busy.
        while 1 - free.mean() < target and i < len(pool):
            block = find_block(topo, free, pool[i].request)
            if block is not None:
                free[block.nodes] = False
            i += 1
        times: dict[str, list[float]] = {"torus": [], "mesh": [], "nodes": []}
        found: dict[str, int] = {"torus": 0, "mesh": 0, "nodes": 0}
        picks = rng.integers(0, len(pool), size=args.queries)
        for k in picks:
            request = pool[int(k)].request
            t0 = time.perf_counter()
            block = find_block(topo, free, request)
            times[mode_of(request)].append(time.perf_counter() - t0)
            found[mode_of(request)] += block is not None
        occupancy = 1 - free.mean()
        everything = [t for v in times.values() for t in v]
        for mode, values in [*times.items(), ("all", everything)]:
            if not values:
                continue
            ms = np.asarray(values) * 1e3
            hits = found.get(mode, sum(found.values()))
            print(
                f"{occupancy:9.1%} {mode:>7} {len(ms):5d} {np.median(ms):10.3f} "
                f"{np.percentile(ms, 99):8.3f} {hits:6d}"
            )


if __name__ == "__main__":
    main()
