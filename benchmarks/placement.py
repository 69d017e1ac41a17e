"""Placement query latency on the Fugaku torus (158,976 nodes) at 50/70/90 % occupancy.

The machine is filled with blocks of the synthetic torus workload (orchestrator.simulate.workload)
until the target share of nodes is busy; then the time of one ``find_block`` query is measured
for requests drawn from the same distribution, twice: *cold* (from the free mask alone, as the
first query of a scheduling pass) and *warm* (with the summed-volume tables of that free mask
already built, as every later query of the same pass). Prints median and p99 per mode.

``--clock wall`` (default) times with ``perf_counter``; ``--clock cpu`` with the thread's CPU
time (``time.thread_time``), which leaves out the time the process waits for a core: on a
shared machine the wall p99 mostly measures the other processes.

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
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    cluster = load_cluster("fugaku")
    topo = cluster.topology
    pool = synthetic_torus_workload(cluster, 20_000, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    print(f"{topo.describe()}; {args.queries} queries per occupancy level; {args.clock} clock")
    print(
        f"{'occupancy':>9} {'mode':>7} {'n':>5} {'cold median':>11} {'cold p99':>9} "
        f"{'warm median':>11} {'warm p99':>9} {'found':>6}"
    )
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
        warm: dict[str, list[float]] = {"torus": [], "mesh": [], "nodes": []}
        found: dict[str, int] = {"torus": 0, "mesh": 0, "nodes": 0}
        picks = rng.integers(0, len(pool), size=args.queries)
        cache: dict[str, object] = {}
        for k in picks:
            request = pool[int(k)].request
            t0 = clock()
            block = find_block(topo, free, request)
            times[mode_of(request)].append(clock() - t0)
            found[mode_of(request)] += block is not None
            find_block(topo, free, request, cache)  # build this size's tables once
            t0 = clock()
            find_block(topo, free, request, cache)
            warm[mode_of(request)].append(clock() - t0)
        occupancy = 1 - free.mean()
        times["all"] = [t for mode in ("torus", "mesh", "nodes") for t in times[mode]]
        warm["all"] = [t for mode in ("torus", "mesh", "nodes") for t in warm[mode]]
        for mode, values in times.items():
            if not values:
                continue
            cold_ms = np.asarray(values) * 1e3
            warm_ms = np.asarray(warm[mode]) * 1e3
            hits = found.get(mode, sum(found.values()))
            print(
                f"{occupancy:9.1%} {mode:>7} {len(cold_ms):5d} {np.median(cold_ms):11.3f} "
                f"{np.percentile(cold_ms, 99):9.3f} {np.median(warm_ms):11.3f} "
                f"{np.percentile(warm_ms, 99):9.3f} {hits:6d}"
            )


if __name__ == "__main__":
    main()
