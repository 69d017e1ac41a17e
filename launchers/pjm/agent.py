"""The pilot agent of the PJM backend (standard library only; the body of the pilot PJM job).

Usage: ``python -I -S agent.py SPOOL IDLE_S``

It runs inside one large PJM allocation and starts our jobs in sub-boxes of it. The daemon's
backend and the agent share a spool folder (a shared file system, as Fugaku's) and talk through
files only, so either side may restart without losing a job::

    SPOOL/inbox/KEY.json      the backend writes a job (atomically); KEY = JOBID-ATTEMPT
    SPOOL/accepted/KEY.json   the agent took it (a rename: exactly one side wins)
    SPOOL/rejected/KEY.json   the agent closed before taking it: the backend requeues the job
    SPOOL/closed              the agent accepts nothing more (idle, stop, or allocation ending)
    SPOOL/stop                the backend asks the agent to close once its jobs are done
    SPOOL/agent               the agent's pid and PJM job id, written when it starts

A job file names its attempt folder; the agent runs ``mpiexec -n P -vcoordfile FOLDER/vcoord
PYTHON -I -S supervisor.py FOLDER/job.json`` there and writes ``mpiexec.rc`` when it ends. The
ranks write their own end records (:mod:`.supervisor`).

The agent closes after ``IDLE_S`` seconds with nothing to run (at least 30 s before its first
job), so the allocation is given back when our queue drains; on ``stop``; and on SIGTERM (pjdel,
or the elapse limit): then the jobs it runs end with the allocation and the backend requeues
them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

if not __package__:
    # Run as a script under -I: the repository root (where orchestrator/nodeside lies) is not
    # on sys.path by itself.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from orchestrator.nodeside.files import atomic_write

POLL_S = 0.05
FIRST_JOB_S = 30.0
RANK_SCRIPT = Path(__file__).resolve().parent / "supervisor.py"


def _inbox(spool: Path) -> list[Path]:
    return sorted(p for p in (spool / "inbox").glob("*.json") if not p.name.startswith("."))


def _launch(spool: Path, key: str) -> subprocess.Popen[bytes] | None:
    job = json.loads((spool / "accepted" / f"{key}.json").read_text())
    folder = Path(job["dir"])
    argv = ["mpiexec", "-n", str(job["ranks"]), "-vcoordfile", str(folder / "vcoord")]
    argv += [job["python"], "-I", "-S", str(RANK_SCRIPT), str(folder / "job.json")]
    with open(folder / "mpiexec.out", "ab") as out, open(folder / "mpiexec.err", "ab") as err:
        try:
            # Same process group as the agent: PJM's signals to the job reach every rank.
            return subprocess.Popen(argv, cwd=folder, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err)  # fmt: skip
        except OSError as e:
            err.write(f"orch pilot: cannot run mpiexec: {e}\n".encode())
            atomic_write(folder / "mpiexec.rc", "127\n")
            return None


def _close(spool: Path) -> None:
    """Accept nothing more; hand back what was not taken."""
    if not (spool / "closed").exists():
        atomic_write(spool / "closed", f"{time.time()}\n")
    for path in _inbox(spool):
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, spool / "rejected" / path.name)


def _reap(spool: Path, running: dict[str, subprocess.Popen[bytes]]) -> bool:
    """Record the end of each job whose mpiexec exited; True if any did."""
    ended = False
    for key, proc in list(running.items()):
        code = proc.poll()
        if code is not None:
            job = json.loads((spool / "accepted" / f"{key}.json").read_text())
            atomic_write(Path(job["dir"]) / "mpiexec.rc", f"{code}\n")
            del running[key]
            ended = True
    return ended


def _take(spool: Path, running: dict[str, subprocess.Popen[bytes]]) -> bool:
    """Accept and launch the jobs in the inbox; True if any was taken."""
    taken = False
    for path in _inbox(spool):
        key = path.stem
        try:
            os.rename(path, spool / "accepted" / path.name)
        except FileNotFoundError:  # withdrawn by the backend (cancelled before start)
            continue
        taken = True
        launched = _launch(spool, key)
        if launched is not None:
            running[key] = launched
    return taken


def main(args: list[str]) -> int:
    spool, idle_s = Path(args[0]), float(args[1])
    for sub in ("inbox", "accepted", "rejected"):
        (spool / sub).mkdir(parents=True, exist_ok=True)
    atomic_write(spool / "agent", f"{os.getpid()} {os.environ.get('PJM_JOBID', '-')}\n")
    ending: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: ending.append(signum))
    running: dict[str, subprocess.Popen[bytes]] = {}
    last_busy = time.monotonic()
    ran_any = False
    while True:
        if _reap(spool, running):
            last_busy = time.monotonic()
        if ending:
            # The allocation ends: its processes get PJM's signals with us; wait briefly.
            _close(spool)
            deadline = time.monotonic() + 5.0
            while any(p.poll() is None for p in running.values()) and time.monotonic() < deadline:
                time.sleep(POLL_S)
            return 0
        # Before its first job the agent waits longer: it was asked for because jobs wait,
        # and the daemon hands them over at its next scheduling pass.
        limit = idle_s if ran_any else max(idle_s, FIRST_JOB_S)
        idle = not running and time.monotonic() - last_busy > limit
        if (spool / "stop").exists() or idle or (spool / "closed").exists():
            _close(spool)
            if not running:
                return 0
        elif _take(spool, running):
            ran_any = True
            last_busy = time.monotonic()
        if running:
            last_busy = time.monotonic()
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
