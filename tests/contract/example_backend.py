"""A minimal backend, to show what a new engine needs: three hooks and its engine's text format.

The "engine" here is ``setsid`` to start a task and ``ps`` to ask after it: each task runs under
the node-side supervisor every process-based backend shares (it writes the task records of
:mod:`orchestrator.nodeside.record`), and a poll asks ``ps`` once for every task of every job.
Everything else (the job's folder, the output files, a submitted script, ``abort_start``, how an
attempt ended while the daemon was down) comes from
:class:`~orchestrator.backends.JobFolderBackend`. It passes the contract suite
(``test_contract_example.py``) like the real backends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from launchers.local.backend import SUPERVISOR_SCRIPT
from orchestrator.backends import Handle, Liveness, PollResult
from orchestrator.backends.jobfolder import JobFolderBackend, PreparedJob, open_owner_only
from orchestrator.nodeside import record
from orchestrator.nodeside.rank_env import rank_environment

__all__ = ["ExampleBackend", "parse_ps"]


def parse_ps(text: str) -> dict[int, str]:
    """``ps -o pid=,stat= -p ...`` -> ``{pid: state letter}`` (``Z``: exited, not yet reaped).

    >>> parse_ps("  12 Ss\\n 345 Z\\n")
    {12: 'S', 345: 'Z'}
    """
    found: dict[int, str] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0].isdigit():
            found[int(words[0])] = words[1][0]
    return found


def running_pids(pids: Iterable[int]) -> set[int]:
    """The engine's status query: which of ``pids`` still run (one ``ps`` for all)."""
    wanted = sorted(set(pids))
    if not wanted:
        return set()
    done = subprocess.run(
        ["ps", "-o", "pid=,stat=", "-p", ",".join(map(str, wanted))],
        capture_output=True,
        text=True,
        check=False,
    )
    return {pid for pid, state in parse_ps(done.stdout).items() if state not in ("Z", "X")}


class ExampleBackend(JobFolderBackend):
    """Each task a session of its own (``setsid``), asked after with ``ps``."""

    name = "example"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._children: list[subprocess.Popen[bytes]] = []

    # Hook 1: start the prepared attempt, return what finds it again.
    def _launch(self, job: PreparedJob) -> Handle:
        spec = job.spec
        env = {**os.environ, **self.job_environment(spec), "MASTER_ADDR": "127.0.0.1"}
        env["MASTER_PORT"] = "29500"
        pids = []
        with (
            open(job.paths.stdout, "ab", opener=open_owner_only) as out,
            open(job.paths.stderr, "ab", opener=open_owner_only) as err,
        ):
            for rank in range(job.ntasks):
                ranks = rank_environment(
                    spec.nodes, spec.tasks_per_node, *divmod(rank, spec.tasks_per_node)
                )
                argv = [sys.executable, "-I", "-S", str(SUPERVISOR_SCRIPT)]
                argv += [str(job.attempt_dir), str(rank), "--", *job.argv]
                child = subprocess.Popen(
                    ["setsid", *argv], env={**env, **ranks}, cwd=job.cwd,
                    stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                )  # fmt: skip
                self._children.append(child)
                pids.append(child.pid)
        return {"dir": str(job.attempt_dir), "pids": pids}

    # Hook 2: how the jobs are doing (one engine query for all of them).
    def poll(self, handles: Mapping[int, Handle]) -> dict[int, PollResult]:
        self._children = [c for c in self._children if c.poll() is None]
        running = running_pids(pid for h in handles.values() for pid in h["pids"])
        out = {}
        for job_id, handle in handles.items():
            ends = self.task_ends(handle["dir"], len(handle["pids"]))
            codes = tuple(end.code if end is not None else None for end in ends)
            alive = sum(
                end is None and pid in running
                for end, pid in zip(ends, handle["pids"], strict=True)
            )
            if alive:
                out[job_id] = PollResult(Liveness.RUNNING, codes, alive)
            elif None in codes:
                out[job_id] = PollResult(Liveness.LOST, codes)
            else:
                out[job_id] = PollResult(Liveness.EXITED, codes)
        return out

    # Hook 3: signal every live task (its whole session).
    def signal(self, handle: Handle, signum: int) -> None:
        for pid in handle["pids"]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signum)

    # Optional: after a daemon crash during a start, kill what started (the abort marker that
    # keeps later supervisors from starting is already written by the template).
    def _abort_launch(self, job_id: int, attempt: int, attempt_dir: Path) -> None:
        for pid_file in attempt_dir.glob("task-*.pid"):
            task = record.read_pid(pid_file)
            if task is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(task[0], signal.SIGKILL)
