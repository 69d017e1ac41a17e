"""Per-job overhead of the PJM backend (submit to done for ``true``) beside raw ``pjsub``.

PJM is not public: both sides run against the emulator of ``tests/pjm_emulator`` (real
processes, emulated commands), in the same run, one job at a time on an idle machine:

* raw: ``pjsub`` of a one-node script running ``true``, then ``pjstat -H`` every 5 ms until the
  job is listed as finished;
* direct: an in-process daemon with ``--backend pjm`` submits ``true`` on one node and ticks
  every 10 ms until the job is COMPLETED (one pjsub per job; mpiexec and the rank wrapper);
* pilot: the same through one pilot allocation (``mode=pilot``), already running for every job
  but the first (whose figure, which includes starting the allocation, is reported apart);
* batch: ``--batch`` one-node ``true`` jobs submitted at once, until the last is done, direct
  (one PJM job each, the 96-node emulated machine runs them all at once) and pilot (12 at a
  time in the 2x3x2 allocation).

    .venv/bin/python benchmarks/pjm_overhead.py [--jobs 20] [--batch 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "pjm_emulator"))

import pjm_emu  # noqa: E402

from launchers.pjm import PjmBackend, pilot_cluster  # noqa: E402
from launchers.pjm.text import parse_pjstat, parse_pjsub  # noqa: E402
from orchestrator.backends.contract import BaseBackend  # noqa: E402
from orchestrator.daemon.service import Daemon  # noqa: E402
from orchestrator.daemon.spec import JobSpec  # noqa: E402
from orchestrator.resources.cluster import Cluster  # noqa: E402
from orchestrator.resources.request import parse_shape  # noqa: E402
from orchestrator.resources.topology import NodeResources, Torus3DTopology  # noqa: E402
from orchestrator.scheduling.job import JobState  # noqa: E402
from orchestrator.store import Store, sqlite_url  # noqa: E402

NODE = NodeResources(cpus=4, memory_mb=4000)


def sh(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


def raw_pjsub(work: Path) -> float:
    script = work / "true.sh"
    script.write_text('#!/bin/sh\n#PJM -L "node=1"\ntrue\n')
    t = time.perf_counter()
    job = parse_pjsub(sh(["pjsub", str(script)], work))
    while True:
        if any(row.job_id == job for row in parse_pjstat(sh(["pjstat", "-H", job], work))):
            return time.perf_counter() - t
        time.sleep(0.005)


def through_daemon(daemon: Daemon) -> float:
    spec = JobSpec.from_mapping({"argv": ["true"], "nodes": 1})
    t = time.perf_counter()
    job_id = daemon.submit([spec])[0][0]
    while True:
        daemon.tick(time.time())
        state = JobState(daemon.store.get_job(job_id)["state"])
        if state.is_finished and not daemon.draining:
            assert state is JobState.COMPLETED, daemon.store.events_of(job_id)
            return time.perf_counter() - t
        time.sleep(0.01)


def batch(daemon: Daemon, jobs: int) -> float:
    """Seconds from submitting ``jobs`` one-node ``true`` jobs at once to the last one done."""
    specs = [JobSpec.from_mapping({"argv": ["true"], "nodes": 1}) for _ in range(jobs)]
    t = time.perf_counter()
    ids = [i for group in daemon.submit(specs) for i in group]
    while True:
        daemon.tick(time.time())
        states = [JobState(daemon.store.get_job(i)["state"]) for i in ids]
        if all(s.is_finished for s in states) and not daemon.draining:
            assert all(s is JobState.COMPLETED for s in states)
            return time.perf_counter() - t
        time.sleep(0.01)


def make_daemon(root: Path, cluster: Cluster, backend: BaseBackend) -> Daemon:
    root.mkdir(parents=True, exist_ok=True)
    return Daemon(Store(sqlite_url(root / "orch.db")), cluster, backend)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(1000 * statistics.median(values), 1),
        "p90_ms": round(1000 * sorted(values)[int(0.9 * (len(values) - 1))], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=40, help="jobs submitted at once")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        with emulator(base):
            torus = Cluster("pjm-emu", Torus3DTopology((4, 6, 4), (2, 3, 2)), NODE)
            direct_backend = PjmBackend(base / "direct" / "backend")
            pilot_backend = PjmBackend(
                base / "pilot" / "backend", mode="pilot", pilot_shape=parse_shape("2x3x2")
            )
            direct = make_daemon(base / "direct", torus, direct_backend)
            pilot = make_daemon(base / "pilot", pilot_cluster("2x3x2", NODE), pilot_backend)
            raw, dir_s, pil_s = [], [], []
            first_pilot = through_daemon(pilot)  # includes submitting the allocation
            for _ in range(args.jobs):  # interleaved: the machine's load hits all three alike
                raw.append(raw_pjsub(base))
                dir_s.append(through_daemon(direct))
                pil_s.append(through_daemon(pilot))
            batch_direct = batch(direct, args.batch)
            batch_pilot = batch(pilot, args.batch)
            pilot.backend.close()
            out = {
                "batch_jobs": args.batch,
                "batch_direct_s": round(batch_direct, 2),
                "batch_pilot_s": round(batch_pilot, 2),
                "jobs": args.jobs,
                "raw_pjsub": summary(raw),
                "daemon_pjm_direct": summary(dir_s),
                "daemon_pjm_pilot": summary(pil_s),
                "pilot_first_job_ms": round(1000 * first_pilot, 1),
                "direct_over_raw": round(statistics.median(dir_s) / statistics.median(raw), 2),
                "pilot_over_raw": round(statistics.median(pil_s) / statistics.median(raw), 2),
                "pjm_commands_direct": direct_backend.commands_run,
                "pjm_commands_pilot": pilot_backend.commands_run,
            }
    print(json.dumps(out, indent=2))


@contextmanager
def emulator(base: Path) -> Iterator[Path]:
    """The emulator's commands first on PATH, its state under ``base``."""
    state = base / "emu"
    state.mkdir()
    pjm_emu.install(base / "bin", sys.executable)
    os.environ["PJM_EMU_ROOT"] = str(state)
    os.environ["PATH"] = f"{base / 'bin'}{os.pathsep}{os.environ['PATH']}"
    try:
        yield state
    finally:
        pjm_emu.stop_all(state)


if __name__ == "__main__":
    main()
