"""The local Slurm's sbatch next to the daemon: submissions per second and submit-to-running.

Needs the real local Slurm of ``../shared/slurm`` (started here with its ``start-slurm.sh`` if
``sinfo`` cannot reach a controller, and stopped again with ``stop-slurm.sh`` in that case).
The daemon's own figures come from ``daemon_throughput.py``; this measures Slurm the same way:
``sbatch`` processes back to back (held jobs, cancelled after), then 20 one-node jobs on an
idle cluster, submit to RUNNING as ``squeue`` sees it.

    .venv/bin/python benchmarks/daemon_vs_slurm.py [--submissions 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

SLURM = Path(__file__).resolve().parents[2] / "shared" / "slurm"


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def slurm_up() -> bool:
    return subprocess.run(["sinfo"], capture_output=True, check=False).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=100)
    args = parser.parse_args()
    started_here = not slurm_up()
    if started_here:
        subprocess.run(["bash", str(SLURM / "start-slurm.sh")], check=True, capture_output=True)
    out: dict[str, float] = {}
    try:
        ids = []
        t = time.perf_counter()
        for _ in range(args.submissions):
            ids.append(
                sh(
                    "sbatch",
                    "--parsable",
                    "--hold",
                    "-N",
                    "1",
                    "--output=/dev/null",
                    "--wrap",
                    "true",
                )
            )
        out["sbatch_per_s"] = args.submissions / (time.perf_counter() - t)
        sh("scancel", *ids)
        time.sleep(2)
        latencies = []
        for _ in range(20):
            t = time.perf_counter()
            job = sh("sbatch", "--parsable", "-N", "1", "--output=/dev/null", "--wrap", "sleep 0.2")
            while sh("squeue", "-h", "-j", job, "-o", "%T") not in ("RUNNING", "COMPLETING", ""):
                time.sleep(0.005)
            latencies.append(time.perf_counter() - t)
            time.sleep(0.3)
        out["slurm_submit_to_running_median_ms"] = 1000 * statistics.median(latencies)
        out["slurm_submit_to_running_max_ms"] = 1000 * max(latencies)
    finally:
        if started_here:
            subprocess.run(["bash", str(SLURM / "stop-slurm.sh")], check=False, capture_output=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
