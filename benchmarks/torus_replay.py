"""Replay a synthetic shaped workload on the Fugaku torus preset (158,976 nodes), FCFS + EASY.

Prints jobs per second and the schedule's metrics (including fragmentation). The workload is
``synthetic_torus_workload`` (see docs/simulation.md for its distribution).

    .venv/bin/python benchmarks/torus_replay.py [--jobs 20000] [--seed 0] [--load 0.9]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from orchestrator.resources.cluster import load_cluster
from orchestrator.simulate.engine import simulate
from orchestrator.simulate.workload import synthetic_torus_workload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load", type=float, default=0.9)
    parser.add_argument("--backfill", default="easy")
    args = parser.parse_args()
    cluster = load_cluster("fugaku")
    jobs = synthetic_torus_workload(cluster, args.jobs, seed=args.seed, load=args.load)
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        rate = done / (time.perf_counter() - started)
        print(f"  {done}/{total} jobs, {rate:.1f} jobs/s", file=sys.stderr, flush=True)

    result = simulate(cluster, jobs, order="fcfs", backfill=args.backfill, progress=progress)
    print(json.dumps({"cluster": "fugaku", "backfill": args.backfill, **result.summary()}))


if __name__ == "__main__":
    main()
