"""Wall time of one ``orch`` command against a running daemon, beside ``sbatch`` and a bare Python.

Each command is run ``--runs`` times in turn (submit, queue, cancel, then the peers), and the
median and the 90th percentile of each are printed. The daemon is started for the run in a
temporary state folder (``--cluster local``); ``sbatch --wrap true`` runs only where ``sinfo``
answers (the local Slurm of ``../shared/slurm``), its jobs cancelled at the end.

    .venv/bin/python benchmarks/cli_speed.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - start, done.stdout.strip()


def summary(samples: list[float]) -> str:
    ms = sorted(1000 * s for s in samples)
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    return f"median {statistics.median(ms):6.1f} ms   p90 {p90:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    orch = str(VENV_BIN / "orch")
    python = sys.executable
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "ORCH_STATE_DIR": folder}
        state = ["--state-dir", folder]
        subprocess.run([orch, "daemon", "start", *state, "--cluster", "local"], check=True)
        times: dict[str, list[float]] = {
            "orch submit -- true": [],
            "orch queue": [],
            "orch cancel ID": [],
            "python -c pass": [],
            "python: import click, json, http.client": [],
        }
        slurm = (
            shutil.which("sbatch") is not None
            and subprocess.run(["sinfo", "-h"], capture_output=True, check=False).returncode == 0
        )
        if slurm:
            times["sbatch --wrap true"] = []
            times["squeue"] = []
        slurm_ids: list[str] = []
        try:
            for _ in range(args.runs):
                elapsed, out = timed(
                    [orch, "submit", *state, "--parsable", "--hold", "--", "true"], env
                )
                times["orch submit -- true"].append(elapsed)
                times["orch queue"].append(timed([orch, "queue", *state], env)[0])
                times["orch cancel ID"].append(timed([orch, "cancel", *state, out], env)[0])
                times["python -c pass"].append(timed([python, "-c", "pass"], env)[0])
                imports = "import click, json, http.client"
                times["python: import click, json, http.client"].append(
                    timed([python, "-c", imports], env)[0]
                )
                if slurm:
                    elapsed, out = timed(["sbatch", "--parsable", "--hold", "--wrap", "true"], env)
                    slurm_ids.append(out.split(";")[0])
                    times["sbatch --wrap true"].append(elapsed)
                    times["squeue"].append(timed(["squeue"], env)[0])
        finally:
            if slurm_ids:
                subprocess.run(["scancel", *slurm_ids], check=False)
            subprocess.run([orch, "daemon", "stop", *state], check=False, capture_output=True)
    load = os.getloadavg()
    print(f"{args.runs} runs each, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for name, samples in times.items():
        print(f"{name:42s} {summary(samples)}")


if __name__ == "__main__":
    main()
