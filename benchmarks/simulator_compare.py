"""The simulator, two source trees of this project side by side: the full-trace replays of
``benchmarks/replay.py`` (FCFS + EASY on KTH-SP2, CTC-SP2, SDSC-BLUE), timed for each tree.

Each replay runs in a fresh subprocess of this repository's venv python with that tree first on
``PYTHONPATH``, so the same script times an older commit's engine against the current one; the
trace is read and converted before the clock starts, and the clock covers the ``simulate(...)``
call alone (wall and the process's CPU time; with ``--repeat N`` the subprocess replays N times
and keeps its fastest wall and CPU time). Rounds alternate the trees and swap which goes
first each round (old, new / new, old / ...), so a busy minute on this shared machine lands on
both. Prints every round's figures, the medians per tree and their ratio new / old (< 1: new
faster), the load average at start and end, and which ``engine.py`` each tree's python imported.
Each replay's mean bounded slowdown and utilization are printed too: two trees that schedule
alike show the same. Nothing is asserted.

The older tree is a git worktree, e.g.::

    git worktree add -f /tmp/simold <commit>
    .venv/bin/python benchmarks/simulator_compare.py --old /tmp/simold --rounds 5 --repeat 2
    git worktree remove --force /tmp/simold && git worktree prune
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO.parent / "shared" / "data" / "traces"
# name: (file, nodes, processors per node), as in benchmarks/replay.py
SETUPS = {
    "KTH": ("KTH-SP2-1996-2.1-cln.swf.gz", 100, 1),
    "CTC": ("CTC-SP2-1996-3.1-cln.swf.gz", 338, 1),
    "SDSC-BLUE": ("SDSC-BLUE-2000-4.2-cln.swf.gz", 144, 8),
}


def replay_one(name: str, repeat: int) -> dict[str, float | int | str]:
    """Run in the subprocess: one replay with whichever ``orchestrator`` PYTHONPATH gives."""
    from orchestrator.resources.cluster import Cluster
    from orchestrator.resources.topology import FlatTopology
    from orchestrator.simulate import engine
    from orchestrator.simulate.swf import read_swf
    from orchestrator.simulate.workload import workload_from_swf

    file, nodes, ppn = SETUPS[name]
    trace = read_swf(TRACES / file)
    cluster = Cluster(name, FlatTopology(nodes))
    jobs, skipped = workload_from_swf(trace, cluster, procs_per_node=ppn)
    wall = cpu = float("inf")
    for _ in range(repeat):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        result = engine.simulate(cluster, jobs, order="fcfs", backfill="easy", skipped=skipped)
        wall = min(wall, time.perf_counter() - wall0)
        cpu = min(cpu, time.process_time() - cpu0)
    return {
        "engine": engine.__file__,
        "jobs": result.metrics.jobs,
        "wall_s": wall,
        "cpu_s": cpu,
        "mean_bsld": result.metrics.mean_bsld,
        "utilization": result.metrics.utilization,
    }


def run_tree(tree: Path, name: str, repeat: int) -> dict[str, float | int | str]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, __file__, "--one", name, "--repeat", str(repeat)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tree,
    )
    row: dict[str, float | int | str] = json.loads(done.stdout)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--old", type=Path, help="the older tree (a worktree)")
    parser.add_argument("--new", type=Path, default=REPO, help="the newer tree (default: here)")
    parser.add_argument("--rounds", type=int, default=5, help="old+new pairs (default 5)")
    parser.add_argument("--repeat", type=int, default=1, help="replays per run, best kept (1)")
    parser.add_argument("--traces", default="KTH,CTC,SDSC-BLUE")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(replay_one(args.one, args.repeat)))
        return
    if args.old is None:
        parser.error("--old is required")
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    names = args.traces.split(",")
    print(f"rounds {args.rounds}, repeat {args.repeat}; load average at start: {os.getloadavg()}")
    figures: dict[tuple[str, str], list[dict[str, float | int | str]]] = {}
    for r in range(args.rounds):
        sides = ("old", "new") if r % 2 == 0 else ("new", "old")
        for name in names:
            for side in sides:
                row = run_tree(trees[side], name, args.repeat)
                figures.setdefault((side, name), []).append(row)
                print(
                    f"round {r + 1} {name:9} {side}: wall {row['wall_s']:.3f} s,"
                    f" cpu {row['cpu_s']:.3f} s, bsld {row['mean_bsld']:.4f},"
                    f" util {row['utilization']:.4f}",
                    flush=True,
                )
    print(f"load average at end: {os.getloadavg()}")
    for side in ("old", "new"):
        print(f"{side}: {trees[side]} imports {figures[(side, names[0])][0]['engine']}")
    print()
    print("| trace | jobs | old wall s | new wall s | new/old wall | old cpu s | new cpu s |"
          " new/old cpu |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        med = {
            (side, key): statistics.median(float(row[key]) for row in figures[(side, name)])
            for side in ("old", "new")
            for key in ("wall_s", "cpu_s")
        }
        jobs = figures[("new", name)][0]["jobs"]
        print(
            f"| {name} | {jobs} | {med['old', 'wall_s']:.3f} | {med['new', 'wall_s']:.3f}"
            f" | {med['new', 'wall_s'] / med['old', 'wall_s']:.3f}"
            f" | {med['old', 'cpu_s']:.3f} | {med['new', 'cpu_s']:.3f}"
            f" | {med['new', 'cpu_s'] / med['old', 'cpu_s']:.3f} |"
        )


if __name__ == "__main__":
    main()
