"""The Slurm backend's overhead beside raw Slurm, and pilot versus direct mode for many jobs.

Needs the real local Slurm of ``../shared/slurm`` (started here with its ``start-slurm.sh`` if
``sinfo`` cannot reach a controller, and stopped again in that case).

1. Per-job overhead, one job at a time, submit to done for ``true`` on one node, the paths
   interleaved in one run: raw ``sbatch --wrap true`` with ``squeue`` polled every tick; an
   in-process daemon over the Slurm backend in direct mode, in pilot mode (the allocation
   already running), and over the local backend for reference.
2. 200 short jobs (``true``, one node each) on the 16 nodes, all submitted at once: total time
   to the last one's end, direct mode versus pilot mode (pilot of 16 nodes, acquisition
   included).

The daemons tick every ``--tick`` seconds (the real daemon's loop sleeps until its next due time,
at most 0.2 s while jobs run; a fixed tick makes the paths comparable).

    .venv/bin/python benchmarks/slurm_overhead.py [--jobs 10] [--many 200] [--tick 0.02]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launchers.local import LocalBackend  # noqa: E402
from launchers.slurm import SlurmBackend  # noqa: E402
from orchestrator.backends.contract import BaseBackend  # noqa: E402
from orchestrator.daemon.service import Daemon, DaemonConfig  # noqa: E402
from orchestrator.daemon.spec import JobSpec  # noqa: E402
from orchestrator.resources.cluster import load_cluster  # noqa: E402
from orchestrator.scheduling.job import JobState  # noqa: E402
from orchestrator.store import Store, sqlite_url  # noqa: E402

SLURM = REPO.parent / "shared" / "slurm"
CLUSTER = load_cluster("slurm16")


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def slurm_up() -> bool:
    done = subprocess.run(["sinfo", "-h"], capture_output=True, check=False)
    return done.returncode == 0


def raw_sbatch(tick: float, wrap: str = "true") -> float:
    """sbatch of ``wrap`` on one node, then squeue every tick until it is COMPLETED."""
    t0 = time.perf_counter()
    job = sh("sbatch", "--parsable", "-N", "1", "--output=/dev/null", "--wrap", wrap)
    while True:
        state = sh("squeue", "-h", "-t", "all", "-j", job, "-o", "%T")
        if state == "COMPLETED":
            return time.perf_counter() - t0
        if state in ("FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT"):
            raise RuntimeError(f"raw job {job} ended {state}")
        time.sleep(tick)


class Bench:
    """An in-process daemon over one backend, ticked every ``tick`` seconds."""

    def __init__(self, root: Path, backend: BaseBackend, tick: float) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.store = Store(sqlite_url(root / "orch.db"))
        cluster = CLUSTER if isinstance(backend, SlurmBackend) else load_cluster("local")
        self.daemon = Daemon(self.store, cluster, backend, DaemonConfig(reschedule_s=0.5))
        self.tick = tick

    def run(self, count: int) -> float:
        """Submit ``count`` one-node ``true`` jobs at once; seconds until all have ended."""
        spec = JobSpec.from_mapping({"argv": ["true"], "nodes": 1})
        t0 = time.perf_counter()
        ids = [i for group in self.daemon.submit([spec] * count) for i in group]
        pending = set(ids)
        while pending:
            self.daemon.tick(time.time())
            for job_id in list(pending):
                state = JobState(self.store.get_job(job_id)["state"])
                if state.is_finished:
                    if state is not JobState.COMPLETED:
                        raise RuntimeError(f"job {job_id} ended {state}")
                    pending.discard(job_id)
            if pending:
                time.sleep(self.tick)
        elapsed = time.perf_counter() - t0
        while self.daemon.draining or self.daemon.active:
            self.daemon.tick(time.time())
            time.sleep(self.tick)
        return elapsed

    def close(self) -> None:
        self.daemon.stop()
        self.store.close()


def summary(name: str, values: list[float], raw: float | None) -> str:
    med = statistics.median(values)
    p90 = sorted(values)[max(0, round(0.9 * len(values)) - 1)]
    ratio = f"{med / raw:.2f}" if raw else "1"
    return f"| {name} | {med * 1000:.0f} ms | {p90 * 1000:.0f} ms | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10, help="jobs per path for the overhead")
    parser.add_argument("--many", type=int, default=200, help="jobs of the pilot/direct race")
    parser.add_argument("--tick", type=float, default=0.02)
    args = parser.parse_args()
    started_here = not slurm_up()
    if started_here:
        subprocess.run(["bash", str(SLURM / "start-slurm.sh")], check=True, capture_output=True)
    root = Path(tempfile.mkdtemp(prefix="orch-slurm-bench-"))
    names = CLUSTER.topology.node_names
    try:
        benches: dict[str, Bench] = {
            "direct": Bench(root / "d", SlurmBackend(root / "d" / "b", names), args.tick),
            "pilot": Bench(
                root / "p",
                SlurmBackend(root / "p" / "b", names, mode="pilot", pilot_nodes=2),
                args.tick,
            ),
            "local": Bench(root / "l", LocalBackend(root / "l" / "b"), args.tick),
        }
        first_pilot = benches["pilot"].run(1)  # acquires the allocation
        times: dict[str, list[float]] = {
            "raw": [],
            "raw_srun": [],
            "direct": [],
            "pilot": [],
            "local": [],
        }
        paths: dict[str, Callable[[], float]] = {
            "raw": lambda: raw_sbatch(args.tick),
            "raw_srun": lambda: raw_sbatch(args.tick, "srun true"),
            "direct": lambda: benches["direct"].run(1),
            "pilot": lambda: benches["pilot"].run(1),
            "local": lambda: benches["local"].run(1),
        }
        for _ in range(args.jobs):
            for name, path in paths.items():
                times[name].append(path())
        raw = statistics.median(times["raw"])
        print(f"per-job overhead, submit to done for `true`, {args.jobs} jobs per path:")
        print("| path | median | p90 | / raw sbatch |")
        print("|---|---|---|---|")
        print(summary("raw `sbatch --wrap true`, `squeue` every tick", times["raw"], None))
        print(summary("raw `sbatch --wrap 'srun true'` (one step)", times["raw_srun"], raw))
        print(summary("daemon, slurm direct", times["direct"], raw))
        print(summary("daemon, slurm pilot (allocation running)", times["pilot"], raw))
        print(summary("daemon, local backend", times["local"], raw))
        print(f"pilot, the first job (submits and waits for the allocation): {first_pilot:.2f} s")
        for bench in benches.values():
            bench.close()
        many = {
            "direct": Bench(root / "md", SlurmBackend(root / "md" / "b", names), args.tick),
            "pilot": Bench(
                root / "mp",
                SlurmBackend(root / "mp" / "b", names, mode="pilot", pilot_nodes=16),
                args.tick,
            ),
        }
        totals = {name: bench.run(args.many) for name, bench in many.items()}
        for bench in many.values():
            bench.close()
        print(f"\n{args.many} jobs of `true` on 16 nodes, submitted at once, to the last end:")
        for name, total in totals.items():
            print(f"  {name}: {total:.1f} s ({args.many / total:.1f} jobs/s)")
        print(f"  pilot / direct: {totals['pilot'] / totals['direct']:.2f}")
    finally:
        if started_here:
            subprocess.run(["bash", str(SLURM / "stop-slurm.sh")], check=False)


if __name__ == "__main__":
    main()
