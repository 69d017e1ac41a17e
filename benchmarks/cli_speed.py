"""Wall time of one ``orch`` command against a running daemon, beside ``sbatch`` and a bare Python.

Each command is run ``--runs`` times in turn (submit, queue, cancel, then the peers), and the
median and the 90th percentile of each's wall time are printed, with the median of its CPU time
(user + system), which other jobs on the machine's cores disturb far less. The daemon is started
for the run in a temporary state folder (``--cluster local``); ``sbatch --wrap true`` runs only
where ``sinfo`` answers (the local Slurm of ``../shared/slurm``), its jobs cancelled at the end.

The ``orch`` commands run twice in each turn: in this environment as it is, and with Python's
bytecode cache (``.pyc`` files, in a temporary ``PYTHONPYCACHEPREFIX`` filled by a first run), as
an installed package has it. The difference matters where ``PYTHONDONTWRITEBYTECODE`` is set (as
in this project's sandbox) and the package is installed editable: there, every start compiles
our modules from their source again, about 9 ms.

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


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system, the command's own work: steadier than wall time
    on a machine whose cores other jobs take) and the printed text of one command."""
    start = time.perf_counter()
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
    ) as child:
        assert child.stdout is not None
        out = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if child.returncode != 0:
        raise subprocess.CalledProcessError(child.returncode, argv, out)
    return wall, usage.ru_utime + usage.ru_stime, out.strip()


def summary(samples: list[tuple[float, float]]) -> str:
    ms = sorted(1000 * wall for wall, _ in samples)
    p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
    cpu = statistics.median(1000 * cpu for _, cpu in samples)
    return f"median {statistics.median(ms):6.1f} ms   p90 {p90:6.1f} ms   CPU median {cpu:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    orch = str(VENV_BIN / "orch")
    python = sys.executable
    before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as pycache:
        env = {**os.environ, "ORCH_STATE_DIR": folder}
        cached = {**env, "PYTHONPYCACHEPREFIX": pycache}
        cached.pop("PYTHONDONTWRITEBYTECODE", None)
        state = ["--state-dir", folder]
        subprocess.run([orch, "daemon", "start", *state, "--cluster", "local"], check=True)
        # The first run of each command writes the bytecode cache the cached runs read.
        *_, first = timed([orch, "submit", *state, "--parsable", "--hold", "--", "true"], cached)
        timed([orch, "queue", *state], cached)
        timed([orch, "cancel", *state, first], cached)
        times: dict[str, list[tuple[float, float]]] = {}

        def run(name: str, argv: list[str], environment: dict[str, str]) -> str:
            wall, cpu, out = timed(argv, environment)
            times.setdefault(name, []).append((wall, cpu))
            return out

        slurm = (
            shutil.which("sbatch") is not None
            and subprocess.run(["sinfo", "-h"], capture_output=True, check=False).returncode == 0
        )
        slurm_ids: list[str] = []
        try:
            for _ in range(args.runs):
                for suffix, environment in (("", env), (" (.pyc cached)", cached)):
                    submit = [orch, "submit", *state, "--parsable", "--hold", "--", "true"]
                    job = run("orch submit -- true" + suffix, submit, environment)
                    run("orch queue" + suffix, [orch, "queue", *state], environment)
                    run("orch cancel ID" + suffix, [orch, "cancel", *state, job], environment)
                run("python -c pass", [python, "-c", "pass"], env)
                imports = "import click, json, http.client"
                run("python: " + imports, [python, "-c", imports], env)
                if slurm:
                    sbatch = ["sbatch", "--parsable", "--hold", "--wrap", "true"]
                    slurm_ids.append(run("sbatch --wrap true", sbatch, env).split(";")[0])
                    run("squeue", ["squeue"], env)
        finally:
            if slurm_ids:
                subprocess.run(["scancel", *slurm_ids], check=False)
            subprocess.run([orch, "daemon", "stop", *state], check=False, capture_output=True)
    load = os.getloadavg()
    print(
        f"{args.runs} runs each, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"(before: {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}); "
        f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}"
    )
    for name, samples in times.items():
        print(f"{name:42s} {summary(samples)}")


if __name__ == "__main__":
    main()
