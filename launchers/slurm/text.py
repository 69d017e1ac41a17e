"""Slurm's text formats: batch scripts we write, and sbatch / sacct / squeue output we read.

Pure functions, no subprocess: the Slurm backend calls them; the tests check them on golden files
and on captured output of Slurm 22.05. Every value in a generated script is quoted: ``#SBATCH``
values with :func:`shlex.quote` (sbatch splits them itself, and a newline is refused), the
command and the environment with :func:`~launchers.shell.shell_word`, which also keeps a carriage
return or line feed inside an argument or value off the script's own lines (sbatch refuses a
script that holds ``\\r\\n``).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from launchers.shell import shell_word
from orchestrator.exceptions import InvalidRequestError, OrchestratorError
from orchestrator.resources.hostlist import compress_hostlist, expand_hostlist
from orchestrator.scheduling.job import JobState

__all__ = [
    "SACCT_FIELDS",
    "SLURM_STATES",
    "UNKNOWN_STATE",
    "Phase",
    "SbatchScript",
    "SlurmJobRecord",
    "SlurmParseError",
    "SlurmState",
    "format_time_limit",
    "gpu_options",
    "parse_node_events",
    "parse_node_jobs",
    "parse_sacct",
    "parse_sbatch",
    "parse_sinfo_nodes",
    "parse_squeue",
    "parse_time_left",
    "render_sbatch_script",
    "slurm_state",
]


class SlurmParseError(OrchestratorError):
    """Slurm printed something we cannot read."""


class Phase(StrEnum):
    """What a Slurm job state means for the daemon (and for a pilot allocation)."""

    WAITING = "waiting"
    """Queued or being set up: the daemon has given it its nodes; nothing runs yet."""
    RUNNING = "running"
    """Its tasks run (a pilot allocation in this phase takes new steps)."""
    ENDING = "ending"
    """Still holds its nodes but is on its way out or stopped (completing, signalled,
    suspended): keep the nodes ours until Slurm lets go of them, or the next job's
    ``--nodelist`` would wait behind this one; a pilot allocation takes no new step."""
    ENDED = "ended"
    """Ended; the tasks' exit codes say how."""
    REQUEUE = "requeue"
    """Ended by the engine through no fault of the job (a node failed, preempted): run it
    again."""

    @property
    def is_active(self) -> bool:
        return self in (Phase.WAITING, Phase.RUNNING, Phase.ENDING)


class SlurmState(NamedTuple):
    """One row of :data:`SLURM_STATES`."""

    ours: JobState
    phase: Phase


SLURM_STATES: Mapping[str, SlurmState] = {
    "PENDING": SlurmState(JobState.PENDING, Phase.WAITING),
    "CONFIGURING": SlurmState(JobState.STARTING, Phase.WAITING),
    "REQUEUED": SlurmState(JobState.PENDING, Phase.WAITING),
    "REQUEUE_FED": SlurmState(JobState.PENDING, Phase.WAITING),
    "REQUEUE_HOLD": SlurmState(JobState.HELD, Phase.WAITING),
    "RESV_DEL_HOLD": SlurmState(JobState.HELD, Phase.WAITING),
    "SPECIAL_EXIT": SlurmState(JobState.HELD, Phase.WAITING),
    "RUNNING": SlurmState(JobState.RUNNING, Phase.RUNNING),
    "RESIZING": SlurmState(JobState.RUNNING, Phase.RUNNING),
    "COMPLETING": SlurmState(JobState.RUNNING, Phase.ENDING),
    "STAGE_OUT": SlurmState(JobState.RUNNING, Phase.ENDING),
    "SIGNALING": SlurmState(JobState.RUNNING, Phase.ENDING),
    # Suspended by an administrator (scontrol suspend) or a gang scheduler: its processes hold
    # their nodes and resume later, so the job is still ours and running, not requeued.
    "SUSPENDED": SlurmState(JobState.RUNNING, Phase.ENDING),
    "STOPPED": SlurmState(JobState.RUNNING, Phase.ENDING),
    "COMPLETED": SlurmState(JobState.COMPLETED, Phase.ENDED),
    "CANCELLED": SlurmState(JobState.CANCELLED, Phase.ENDED),
    "DEADLINE": SlurmState(JobState.CANCELLED, Phase.ENDED),
    "REVOKED": SlurmState(JobState.CANCELLED, Phase.ENDED),
    "FAILED": SlurmState(JobState.FAILED, Phase.ENDED),
    "OUT_OF_MEMORY": SlurmState(JobState.FAILED, Phase.ENDED),
    "LAUNCH_FAILED": SlurmState(JobState.FAILED, Phase.ENDED),
    "TIMEOUT": SlurmState(JobState.TIMEOUT, Phase.ENDED),
    "BOOT_FAIL": SlurmState(JobState.NODE_FAIL, Phase.REQUEUE),
    "NODE_FAIL": SlurmState(JobState.NODE_FAIL, Phase.REQUEUE),
    "PREEMPTED": SlurmState(JobState.PREEMPTED, Phase.REQUEUE),
}
"""Slurm's job states (long names, as ``squeue %T`` and ``sacct State`` print them): our state
and what the state means for the daemon. The one table of Slurm states: the parsers, the
backend's poll and the pilot allocation all read it."""

UNKNOWN_STATE = SlurmState(JobState.RUNNING, Phase.ENDING)
"""A state newer than this table: wait and see (the job keeps its nodes; no new step)."""


def slurm_state(text: str) -> SlurmState:
    """The row for a state as printed: ``CANCELLED by 1000`` and ``RUNNING+`` work too.

    Raises:
        SlurmParseError: for a state name Slurm does not have.
    """
    name = text.strip().split()[0].rstrip("+") if text.strip() else ""
    try:
        return SLURM_STATES[name]
    except KeyError:
        raise SlurmParseError(f"unknown Slurm job state {text!r}") from None


def _known_state(text: str) -> SlurmState:
    try:
        return slurm_state(text)
    except SlurmParseError:
        return UNKNOWN_STATE


def format_time_limit(seconds: float) -> str:
    """Slurm's ``--time`` as ``D-HH:MM:SS`` (rounded up to a whole minute, Slurm's unit).

    >>> format_time_limit(90)
    '0-00:02:00'
    """
    minutes = int(-(-seconds // 60))
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00"


def gpu_options(gpus_per_task: int, gpus_per_node: int, *, step: bool = False) -> list[str]:
    """The GPU options of a job (``step=False``: ``sbatch``) or of one of its steps (``srun``).

    GPUs per task win over GPUs per node (a request gives one or the other). Both are
    ``select/cons_tres`` options of Slurm 22.05, which allocates, accounts (``gres/gpu``) and
    binds them itself: a step with ``--gpus-per-task`` gives each task its own GPUs in
    ``CUDA_VISIBLE_DEVICES`` (``--gpu-bind=per_task:N``, said explicitly: 22.05 implies it,
    older releases do not); with ``--gpus-per-node`` every task of a node sees the node's.
    No GPUs: no option (a step then sees none, even in a job that holds some).

    >>> gpu_options(1, 0, step=True)
    ['--gpus-per-task=1', '--gpu-bind=per_task:1']
    >>> gpu_options(0, 4), gpu_options(0, 0)
    (['--gpus-per-node=4'], [])
    """
    if gpus_per_task > 0:
        options = [f"--gpus-per-task={gpus_per_task}"]
        if step:
            options.append(f"--gpu-bind=per_task:{gpus_per_task}")
        return options
    if gpus_per_node > 0:
        return [f"--gpus-per-node={gpus_per_node}"]
    return []


@dataclass(frozen=True)
class SbatchScript:
    """What a generated ``#SBATCH`` script says.

    Attributes:
        name: ``--job-name``.
        argv: The command ``srun`` runs on every task, exactly as given.
        nodelist: The nodes our allocator chose (``--nodelist``, and ``-N`` their count).
        tasks_per_node: ``--ntasks-per-node``.
        cpus_per_task: ``--cpus-per-task``.
        gpus_per_task, gpus_per_node: GPUs per task, else per node (0: none); the ``srun``
            line asks for the same, so its tasks get them bound (:func:`gpu_options`).
        mem_mb: ``--mem`` per node in MB (0: Slurm's default).
        time_s: ``--time``.
        stdout, stderr: ``--output`` / ``--error`` paths.
        env: Exported in the script (quoted).
        extra: More ``#SBATCH`` options, e.g. ``{"--partition": "debug"}``.
        flags: ``#SBATCH`` options without a value, e.g. ``("--exclusive",)``.
        srun_options: Options of the ``srun`` line, each one word (``--label``,
            ``--output=/path/%t.out``); quoted like every other value.
    """

    name: str
    argv: Sequence[str]
    nodelist: Sequence[str]
    tasks_per_node: int = 1
    cpus_per_task: int = 1
    gpus_per_task: int = 0
    gpus_per_node: int = 0
    mem_mb: int = 0
    time_s: float | None = None
    stdout: str | None = None
    stderr: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)
    flags: Sequence[str] = ()
    srun_options: Sequence[str] = ("--kill-on-bad-exit=1",)


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_OPTION = re.compile(r"^--[a-z][a-z-]*$")


def _sbatch_line(option: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise InvalidRequestError(option.lstrip("-"), value, "must not contain newlines", "debug")
    # sbatch reads #SBATCH lines with its own shell-like word splitting: quote every value.
    return f"#SBATCH {option}={shlex.quote(value)}"


def _resource_lines(spec: SbatchScript) -> list[str]:
    """The ``#SBATCH`` lines of the nodes, tasks, CPUs, GPUs and memory asked for."""
    for name in ("gpus_per_task", "gpus_per_node", "mem_mb"):
        if getattr(spec, name) < 0:
            raise InvalidRequestError(name, getattr(spec, name), "must not be negative", "1")
    lines = [
        _sbatch_line("--nodes", str(len(spec.nodelist))),
        _sbatch_line("--nodelist", compress_hostlist(spec.nodelist)),
        _sbatch_line("--ntasks-per-node", str(spec.tasks_per_node)),
        _sbatch_line("--cpus-per-task", str(spec.cpus_per_task)),
    ]
    for option in gpu_options(spec.gpus_per_task, spec.gpus_per_node):
        lines.append(_sbatch_line(*option.split("=", 1)))
    if spec.mem_mb > 0:
        lines.append(_sbatch_line("--mem", f"{spec.mem_mb}M"))
    return lines


def render_sbatch_script(spec: SbatchScript) -> str:
    """The batch script text for ``spec``.

    Raises:
        InvalidRequestError: for an empty command or node list, a bad variable or option name,
            a negative GPU or memory amount.
    """
    if not spec.argv:
        raise InvalidRequestError("argv", list(spec.argv), "the command is empty", "['hostname']")
    if not spec.nodelist:
        raise InvalidRequestError("nodelist", [], "no nodes", "n[1-2]")
    lines = ["#!/bin/bash", _sbatch_line("--job-name", spec.name), *_resource_lines(spec)]
    if spec.time_s is not None:
        lines.append(_sbatch_line("--time", format_time_limit(spec.time_s)))
    if spec.stdout:
        lines.append(_sbatch_line("--output", spec.stdout))
    if spec.stderr:
        lines.append(_sbatch_line("--error", spec.stderr))
    for option, value in sorted(spec.extra.items()):
        if not _OPTION.match(option):
            raise InvalidRequestError("extra", option, "not a long sbatch option", "--partition")
        lines.append(_sbatch_line(option, value))
    for flag in spec.flags:
        if not _OPTION.match(flag):
            raise InvalidRequestError("flags", flag, "not a long sbatch option", "--exclusive")
        lines.append(f"#SBATCH {flag}")
    lines.append("set -eu")
    for key, value in sorted(spec.env.items()):
        if not _ENV_NAME.match(key):
            raise InvalidRequestError("env", key, "not a valid variable name", "OMP_NUM_THREADS")
        lines.append(f"export {key}={shell_word(value, 'env')}")
    command = " ".join(shell_word(a) for a in spec.argv)
    step = gpu_options(spec.gpus_per_task, spec.gpus_per_node, step=True)
    srun = " ".join(shlex.quote(o) for o in ("srun", *spec.srun_options, *step))
    lines.append(f"{srun} {command}")
    return "\n".join(lines) + "\n"


_SUBMITTED = re.compile(r"^Submitted batch job (\d+)")


def parse_sbatch(text: str) -> str:
    """The job id from ``sbatch`` (plain or ``--parsable`` output: ``123`` or ``123;cluster``).

    >>> parse_sbatch("Submitted batch job 42")
    '42'
    >>> parse_sbatch("42;local")
    '42'
    """
    for raw in text.splitlines():
        line = raw.strip()
        match = _SUBMITTED.match(line)
        if match:
            return match.group(1)
        head = line.split(";")[0]
        if head.isdigit():
            return head
    raise SlurmParseError(f"no job id in sbatch output: {text.strip()[:200]!r}")


SACCT_FIELDS: tuple[str, ...] = ("JobID", "State", "ExitCode", "NodeList", "Start", "End")
"""The fields the backend asks of ``sacct -P -n -X -o ...``, in this order."""


@dataclass(frozen=True)
class SlurmJobRecord:
    """One job as sacct or squeue reports it."""

    job_id: str
    slurm_state: SlurmState
    raw_state: str
    exit_code: int | None = None
    signal: int | None = None
    nodes: tuple[str, ...] = ()

    @property
    def state(self) -> JobState:
        return self.slurm_state.ours

    @property
    def phase(self) -> Phase:
        return self.slurm_state.phase


def _exit_code(text: str) -> tuple[int | None, int | None]:
    code, _, signal = text.partition(":")
    if not code.isdigit():
        return None, None
    return int(code), int(signal) if signal.isdigit() else None


def parse_sacct(text: str, fields: Sequence[str] = SACCT_FIELDS) -> list[SlurmJobRecord]:
    """Rows of ``sacct -P -n -o <fields>`` (``|``-separated). Job steps (``123.batch``,
    ``123.0``) are skipped: a job's own row carries its state.

    Raises:
        SlurmParseError: for a row with the wrong number of fields (a state newer than
            :data:`SLURM_STATES` reads as :data:`UNKNOWN_STATE`).
    """
    names = list(fields)
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        values = line.split("|")
        if len(values) != len(names):
            raise SlurmParseError(
                f"sacct row has {len(values)} fields, expected {len(names)}: {line!r}"
            )
        row = dict(zip(names, values, strict=True))
        job_id = row["JobID"]
        if "." in job_id:
            continue
        code, signal = _exit_code(row.get("ExitCode", ""))
        nodelist = row.get("NodeList", "")
        nodes = tuple(expand_hostlist(nodelist)) if nodelist and nodelist != "None assigned" else ()
        records.append(
            SlurmJobRecord(job_id, _known_state(row["State"]), row["State"], code, signal, nodes)
        )
    return records


def parse_squeue(text: str) -> list[SlurmJobRecord]:
    """Rows of ``squeue -h -o '%i|%T|%N'`` (job id, long state, node list)."""
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.strip().split("|")
        if len(parts) != 3:
            raise SlurmParseError(f"squeue row has {len(parts)} fields, expected 3: {line!r}")
        job_id, state, nodelist = parts
        nodes = tuple(expand_hostlist(nodelist)) if nodelist and "(" not in nodelist else ()
        records.append(SlurmJobRecord(job_id, _known_state(state), state, nodes=nodes))
    return records


def parse_sinfo_nodes(text: str) -> dict[str, str]:
    """Rows of ``sinfo -h -N -o '%N|%t'`` -> ``{node: short state}`` (``idle``, ``alloc``,
    ``mix``, ``down*``, ``drain``, ...). A node listed once per partition keeps its first row.

    >>> parse_sinfo_nodes("n1|idle\\nn2|down*\\n")
    {'n1': 'idle', 'n2': 'down*'}

    Raises:
        SlurmParseError: a row that is not ``NODE|STATE``.
    """
    states: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.strip().split("|")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise SlurmParseError(f"sinfo row is not NODE|STATE: {line!r}")
        states.setdefault(parts[0], parts[1])
    return states


def parse_node_jobs(text: str) -> dict[str, list[tuple[str, str]]]:
    """Rows of ``squeue -h -o '%T|%N|%k'`` (long state, node list, comment) -> ``{node: [(state,
    comment)]}`` for every job that holds nodes (a pending job holds none). The comment comes
    last: it is anyone's text and may hold ``|``.

    >>> parse_node_jobs("RUNNING|n[1-2]|orch-x:1:1\\nPENDING||a|b\\n")
    {'n1': [('RUNNING', 'orch-x:1:1')], 'n2': [('RUNNING', 'orch-x:1:1')]}

    Raises:
        SlurmParseError: a row with fewer than three fields.
    """
    jobs: dict[str, list[tuple[str, str]]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.strip().split("|", 2)
        if len(parts) != 3:
            raise SlurmParseError(f"squeue row is not STATE|NODES|COMMENT: {line!r}")
        state, nodelist, comment = parts
        if nodelist and "(" not in nodelist:
            for node in expand_hostlist(nodelist):
                jobs.setdefault(node, []).append((state, comment))
    return jobs


def parse_node_events(text: str) -> list[tuple[str, str]]:
    """Rows of ``sacctmgr -n -P show event format=NodeName,State`` -> ``[(node, state)]``.
    Cluster-wide events (no node name) are skipped.

    >>> parse_node_events("n3|DOWN\\n|\\n")
    [('n3', 'DOWN')]
    """
    events = []
    for line in text.splitlines():
        node, _, state = line.strip().partition("|")
        if node:
            events.append((node, state))
    return events


def parse_time_left(text: str) -> float | None:
    """``squeue -o %L`` (time left) in seconds; None for no limit (``UNLIMITED``, ``NOT_SET``,
    ``INVALID``).

    >>> parse_time_left("1-02:03:04"), parse_time_left("59:58"), parse_time_left("UNLIMITED")
    (93784.0, 3598.0, None)

    Raises:
        SlurmParseError: text that is neither.
    """
    value = text.strip()
    if value in ("UNLIMITED", "NOT_SET", "INVALID", ""):
        return None
    days, _, clock = value.rpartition("-")
    parts = clock.split(":")
    if not (days == "" or days.isdigit()) or not all(p.isdigit() for p in parts) or len(parts) > 3:
        raise SlurmParseError(f"not a Slurm time left: {text!r}")
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return float(seconds + int(days or 0) * 86400)
