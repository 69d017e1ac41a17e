"""Full-trace replays with FCFS + EASY: wall time, jobs per second and peak memory.

Each trace is replayed in a fresh subprocess so that its peak resident memory (ru_maxrss) is its
own. Traces come from ../shared/data/traces (the Parallel Workloads Archive).

    .venv/bin/python benchmarks/replay.py [--traces KTH,CTC,SDSC-BLUE]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

TRACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"
# name: (file, nodes, processors per node) as in the traces README
SETUPS = {
    "KTH": ("KTH-SP2-1996-2.1-cln.swf.gz", 100, 1),
    "CTC": ("CTC-SP2-1996-3.1-cln.swf.gz", 338, 1),
    "SDSC-BLUE": ("SDSC-BLUE-2000-4.2-cln.swf.gz", 144, 8),
}


def replay_one(name: str) -> dict[str, float | int | str]:
    from orchestrator.resources.cluster import Cluster
    from orchestrator.resources.topology import FlatTopology
    from orchestrator.simulate.engine import simulate
    from orchestrator.simulate.swf import read_swf
    from orchestrator.simulate.workload import workload_from_swf

    file, nodes, ppn = SETUPS[name]
    t0 = time.perf_counter()
    trace = read_swf(TRACES / file)
    cluster = Cluster(name, FlatTopology(nodes))
    jobs, skipped = workload_from_swf(trace, cluster, procs_per_node=ppn)
    load_s = time.perf_counter() - t0
    result = simulate(cluster, jobs, order="fcfs", backfill="easy", skipped=skipped)
    m = result.metrics
    return {
        "trace": name,
        "jobs": m.jobs,
        "skipped": len(skipped),
        "load_s": round(load_s, 2),
        "replay_s": round(m.wall_s, 2),
        "jobs_per_s": round(m.jobs_per_s),
        "mean_bsld": round(m.mean_bsld, 2),
        "utilization": round(m.utilization, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default="KTH,CTC,SDSC-BLUE")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(replay_one(args.one)))
        return
    header = ("trace", "jobs", "skipped", "load_s", "replay_s", "jobs_per_s", "mean_bsld",
              "utilization", "peak_rss_mib")  # fmt: skip
    print(" | ".join(header))
    for name in args.traces.split(","):
        done = subprocess.run(
            [sys.executable, __file__, "--one", name], capture_output=True, text=True, check=True
        )
        row = json.loads(done.stdout)
        print(" | ".join(str(row[h]) for h in header))


if __name__ == "__main__":
    main()
