"""Launcher overhead per trial: 100 trivial trials under Hydra's basic launcher, submitit_local
and ``orch`` (embedded scheduler), measured in one run, side by side.

Per trial = (wall of a 100-trial multirun - wall of a 1-trial multirun) / 99, so Hydra's own
start-up is not counted. The basic launcher runs trials in-process, one after another;
submitit_local starts one process per trial, all at once; ``orch`` starts one process per trial
on the allocated process-node (4 nodes on the ``local`` preset: 4 at a time).

    .venv/bin/python benchmarks/launcher_overhead.py [--trials 100] [--repeats 3]
        [--launchers basic,submitit_local,orch,orch_no_fork]

With repeats, the launchers take turns in each round (so a burst of load hits them alike) and
the table shows each one's median per-trial cost, its range, and the median of its per-round
differences from the basic launcher. ``orch_no_fork`` is ``orch``
with ``hydra.launcher.fork_server=false`` (a fresh interpreter per trial).
"""

from __future__ import annotations

import argparse
import statistics
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
    "orch_no_fork": ["hydra/launcher=orch", "hydra.launcher.fork_server=false"],
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
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--launchers", default="basic,submitit_local,orch")
    args = parser.parse_args()
    names = args.launchers.split(",")
    unknown = sorted(set(names) - set(LAUNCHERS))
    if unknown or "basic" not in names:
        parser.error(f"--launchers: from {', '.join(LAUNCHERS)}, with basic (got {unknown})")
    per: dict[str, list[float]] = {name: [] for name in names}
    walls: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats):
            for name in names:
                folder = Path(tmp) / f"{name}-{round_}"
                one = wall(LAUNCHERS[name], 1, folder / "one")
                many = wall(LAUNCHERS[name], args.trials, folder / "many")
                per[name].append((many - one) / (args.trials - 1))
                walls[name].append((one, many))
                print(f"round {round_ + 1}: {name} {1000 * per[name][-1]:.1f} ms/trial", flush=True)
    basic = statistics.median(per["basic"])
    print(
        f"| launcher | 1 trial (s) | {args.trials} trials (s) | per trial (ms) | range (ms) "
        "| minus basic (ms) | minus basic, same round (ms) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        median = statistics.median(per[name])
        one = statistics.median(w[0] for w in walls[name])
        many = statistics.median(w[1] for w in walls[name])
        low, high = 1000 * min(per[name]), 1000 * max(per[name])
        # The load changes between rounds more than between neighbours in one round: the
        # median of the per-round differences is the steadier figure.
        paired = statistics.median(a - b for a, b in zip(per[name], per["basic"], strict=True))
        print(
            f"| {name} | {one:.2f} | {many:.2f} | {1000 * median:.1f} | {low:.0f}-{high:.0f} "
            f"| {1000 * (median - basic):+.1f} | {1000 * paired:+.1f} |"
        )


if __name__ == "__main__":
    main()
