"""Launcher overhead per trial: 100 trivial trials under Hydra's basic launcher, submitit_local
and ``orch`` (embedded scheduler), measured in one run, side by side.

Per trial = (wall of a 100-trial multirun - wall of a 1-trial multirun) / 99, so Hydra's own
start-up is not counted. The basic launcher runs trials in-process, one after another;
submitit_local starts one process per trial, all at once; ``orch`` starts one process per trial
on the allocated process-node (4 nodes on the ``local`` preset: 4 at a time).

    .venv/bin/python benchmarks/launcher_overhead.py [--trials 100]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APP = Path(__file__).resolve().parent / "sweep_app.py"
LAUNCHERS = {
    "basic": ["hydra/launcher=basic"],
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"],
    "orch": ["hydra/launcher=orch"],
}


def wall(launcher: list[str], n: int, folder: Path) -> float:
    argv = [sys.executable, str(APP), "-m", f"+x=range(0,{n})", *launcher]
    argv.append(f"hydra.sweep.dir={folder}")
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, launcher in LAUNCHERS.items():
            one = wall(launcher, 1, Path(tmp) / f"{name}-1")
            many = wall(launcher, args.trials, Path(tmp) / f"{name}-n")
            rows.append((name, one, many, (many - one) / (args.trials - 1)))
    basic = rows[0][3]
    print(
        f"| launcher | 1 trial (s) | {args.trials} trials (s) | per trial (ms) | minus basic (ms) |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, one, many, per in rows:
        print(
            f"| {name} | {one:.2f} | {many:.2f} | {1000 * per:.1f} | {1000 * (per - basic):+.1f} |"
        )


if __name__ == "__main__":
    main()
