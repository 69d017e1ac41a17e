"""Local backend: one task's start to end (`true`), with and without the spawner, side by side.

The spawner forks each task's supervisor from one helper process; without it every supervisor
is a new interpreter. Per task: wall time from ``start()`` to the poll that sees it ended, and
CPU time in this process and in its children (the spawner, supervisors and commands).

    .venv/bin/python benchmarks/local_spawn.py [--tasks 60] [--rounds 2]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from launchers.local import LocalBackend
from orchestrator.backends.contract import LaunchSpec, Liveness


def cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def measure(spawner: bool, tasks: int) -> tuple[float, float, float]:
    """Per task: wall ms, CPU ms here, CPU ms in children."""
    with tempfile.TemporaryDirectory() as folder:
        backend = LocalBackend(Path(folder), spawner=spawner)
        backend.start(LaunchSpec(0, 1, ["true"], None, ["n0"]))  # starts the spawner
        me, kids = cpu_s(resource.RUSAGE_SELF), cpu_s(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        for job in range(1, tasks + 1):
            handle = backend.start(LaunchSpec(job, 1, ["true"], None, ["n0"]))
            while backend.poll({job: handle})[job].liveness is Liveness.RUNNING:
                time.sleep(0.001)
        wall = time.perf_counter() - start
        backend.close()  # waits for the spawner, so its children's CPU is counted
        me = cpu_s(resource.RUSAGE_SELF) - me
        kids = cpu_s(resource.RUSAGE_CHILDREN) - kids
    return 1000 * wall / tasks, 1000 * me / tasks, 1000 * kids / tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print("| round | spawner | wall per task (ms) | CPU here (ms) | CPU in children (ms) |")
    print("|---|---|---:|---:|---:|")
    for round_ in range(1, args.rounds + 1):
        for spawner in (True, False):
            wall, me, kids = measure(spawner, args.tasks)
            name = "on" if spawner else "off"
            print(f"| {round_} | {name} | {wall:.1f} | {me:.1f} | {kids:.1f} |", flush=True)


if __name__ == "__main__":
    main()
