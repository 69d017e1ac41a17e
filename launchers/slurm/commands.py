"""The Slurm commands the backend runs, each one call: run, check, parse (with _slurm_text).

Every function raises :class:`~orchestrator.exceptions.BackendError` naming the command and what
Slurm said, so the daemon's log tells an operator what to fix (controller down, bad partition).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterable, Sequence

from launchers.slurm.text import (
    SlurmJobRecord,
    parse_node_events,
    parse_node_jobs,
    parse_sacct,
    parse_sbatch,
    parse_sinfo_nodes,
    parse_squeue,
    parse_time_left,
)
from orchestrator.exceptions import BackendError

__all__ = [
    "cancel",
    "failed_nodes",
    "job_states",
    "node_jobs",
    "node_states",
    "run_slurm",
    "sbatch",
    "time_left",
]

TIMEOUT_S = 30.0
"""A Slurm command that has not answered by then means a controller in trouble."""


def run_slurm(argv: Sequence[str], *, input_text: str | None = None, check: bool = True) -> str:
    """Run a Slurm command and return its stdout.

    Raises:
        BackendError: the command is missing, timed out, or (with ``check``) failed.
    """
    try:
        done = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as e:
        raise BackendError(
            f"{argv[0]} not found: install Slurm's client commands (slurm-client) on this host"
        ) from e
    except subprocess.TimeoutExpired as e:
        raise BackendError(
            f"{argv[0]} did not answer within {TIMEOUT_S:g}s: is slurmctld up?"
        ) from e
    if check and done.returncode != 0:
        said = (done.stderr or done.stdout).strip()[:500]
        raise BackendError(f"{' '.join(argv[:2])} ... failed ({done.returncode}): {said}")
    return done.stdout


def sbatch(script: str) -> str:
    """Submit a batch script (given on stdin); returns the Slurm job id."""
    return parse_sbatch(run_slurm(["sbatch", "--parsable"], input_text=script))


def job_states(ids: Iterable[str]) -> dict[str, SlurmJobRecord]:
    """The state of many jobs: one ``squeue`` call (the controller's fresh view, finished jobs
    included for MinJobAge), and ``sacct`` only for the ids squeue no longer knows (after a
    long daemon downtime). Ids that neither knows are absent from the result."""
    wanted = sorted(set(ids), key=lambda i: (len(i), i))
    if not wanted:
        return {}
    # squeue exits 1 when none of the ids is known (all purged): fall through to sacct.
    text = run_slurm(
        ["squeue", "-h", "-t", "all", "-j", ",".join(wanted), "-o", "%i|%T|%N"], check=False
    )
    found = {r.job_id: r for r in parse_squeue(text)}
    missing = [i for i in wanted if i not in found]
    if missing:
        fields = ("JobID", "State", "ExitCode", "NodeList")
        text = run_slurm(
            ["sacct", "-X", "-P", "-n", "-o", ",".join(fields), "-j", ",".join(missing)],
            check=False,
        )
        found.update({r.job_id: r for r in parse_sacct(text, fields)})
    return found


def node_states() -> dict[str, str]:
    """``{node: short state}`` of every node Slurm has (one ``sinfo`` call)."""
    return parse_sinfo_nodes(run_slurm(["sinfo", "-h", "-N", "-o", "%N|%t"]))


def node_jobs() -> dict[str, list[tuple[str, str]]]:
    """``{node: [(long state, comment)]}`` of the jobs that hold nodes (one ``squeue`` call)."""
    return parse_node_jobs(run_slurm(["squeue", "-h", "-o", "%T|%N|%k"]))


def time_left(slurm_id: str) -> float | None:
    """Seconds before a running job's time limit (None: no limit, or Slurm cannot say)."""
    text = run_slurm(["squeue", "-h", "-j", slurm_id, "-o", "%L"], check=False)
    return parse_time_left(text.splitlines()[0]) if text.strip() else None


def failed_nodes(nodes: Sequence[str], since: float) -> set[str]:
    """Which of ``nodes`` went down, drained or failed since ``since`` (epoch seconds), from the
    accounting's node events (Slurm names no failed node in a NODE_FAIL job's record)."""
    if not nodes:
        return set()
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(since - 1))
    text = run_slurm(
        [
            "sacctmgr", "-n", "-P", "show", "event", f"start={start}",
            f"nodes={','.join(nodes)}", "format=NodeName,State",
        ],
        check=False,
    )  # fmt: skip
    bad = ("DOWN", "DRAIN", "FAIL")
    return {n for n, state in parse_node_events(text) if n in nodes and state.startswith(bad)}


def cancel(target: str, signal_name: str | None = None) -> None:
    """``scancel`` a job or step (``123`` or ``123.4``), or send it a signal. A job that has
    already ended is not an error."""
    argv = ["scancel"]
    if signal_name is not None:
        argv.append(f"--signal={signal_name}")
    argv.append(target)
    out = run_slurm(argv, check=False)
    del out
