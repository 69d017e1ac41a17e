"""Fujitsu PJM's text formats: job scripts we write, and pjsub / pjstat / pjdel output we read.

Pure functions, no subprocess: the PJM backend calls them, and the tests check them on golden
files and on text captured from the formats in RIKEN's Fugaku user guide (summarised in
``../shared/pjm/README.md``).

Quoting: every ``#PJM`` value is written inside double quotes and refused if it holds a double
quote, a backslash, a dollar sign, a backquote or a newline; the job's command and environment are
written with :func:`~launchers.shell.shell_word` (:func:`shlex.quote`, or bash's ``$'...'`` for a
value with a control character, so a newline in an argument never starts a line that pjsub could
read as a directive), so no value is ever interpreted by a shell.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from launchers.shell import shell_word
from orchestrator.exceptions import InvalidRequestError, OrchestratorError
from orchestrator.resources.request import Shape
from orchestrator.scheduling.job import JobState

__all__ = [
    "PJM_END_CODES",
    "PJM_ERRORS",
    "PJM_STATES",
    "PjmError",
    "PjmJobStatus",
    "PjmLimitError",
    "PjmNoSuchJobError",
    "PjmScript",
    "format_elapse",
    "parse_pjdel",
    "parse_pjstat",
    "parse_pjsub",
    "pjsub_argv",
    "render_pjm_script",
    "vcoord_file",
]


class PjmError(OrchestratorError):
    """An ``[ERR.] PJM nnnn`` message from pjsub, pjstat or pjdel.

    Attributes:
        code: The four-digit message number, e.g. ``"0054"``.
        command: The command that printed it.
    """

    def __init__(self, code: str, command: str, message: str) -> None:
        self.code = code
        self.command = command
        super().__init__(f"PJM {code} {command}: {message}")


class PjmLimitError(PjmError):
    """``PJM 0054``: the request is over a limit of its resource group or of the machine (node
    count, shape, elapse). Fix the request or choose another group (``-L rscgrp=``)."""


class PjmNoSuchJobError(PjmError):
    """``PJM 0112``: the job does not exist (or has already ended)."""


PJM_ERRORS: Mapping[str, type[PjmError]] = {"0054": PjmLimitError, "0112": PjmNoSuchJobError}
"""PJM message numbers with an exception of their own; any other ``[ERR.]`` is a PjmError."""


PJM_STATES: Mapping[str, JobState] = {
    "ACC": JobState.PENDING,
    "QUE": JobState.PENDING,
    "RNA": JobState.STARTING,
    "RNP": JobState.STARTING,
    "RUN": JobState.RUNNING,
    "RNE": JobState.RUNNING,
    "RNO": JobState.RUNNING,
    "EXT": JobState.COMPLETED,  # refined by the end code, see :func:`final_state`
    "CCL": JobState.CANCELLED,
    "HLD": JobState.HELD,
    "ERR": JobState.FAILED,
    "RJT": JobState.FAILED,
    "SPP": JobState.RUNNING,
    "SPD": JobState.PREEMPTED,
    "RSM": JobState.RUNNING,
}
"""PJM job states (pjstat ST column) to ours."""

PJM_END_CODES: Mapping[int, JobState] = {
    0: JobState.COMPLETED,
    1: JobState.CANCELLED,
    2: JobState.FAILED,
    11: JobState.TIMEOUT,
    12: JobState.FAILED,
    18: JobState.CANCELLED,
    20: JobState.NODE_FAIL,
    23: JobState.FAILED,
}
"""PJM end codes of finished jobs to ours (anything else: FAILED)."""


def final_state(state: str, end_code: int | None) -> JobState:
    """Our state for a PJM state plus, for finished jobs, its end code."""
    if state in {"EXT", "CCL", "ERR", "RJT"} and end_code is not None:
        return PJM_END_CODES.get(end_code, JobState.FAILED)
    try:
        return PJM_STATES[state]
    except KeyError:
        raise PjmError("----", "pjstat", f"unknown job state {state!r}") from None


_UNSAFE_DIRECTIVE = re.compile(r'["\\$`\n\r]')
_SAFE_ENV_VALUE = re.compile(r"^[A-Za-z0-9_./:+@%=-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _directive_value(field_name: str, value: str) -> str:
    if _UNSAFE_DIRECTIVE.search(value):
        raise InvalidRequestError(
            field_name, value, "must not contain quotes, backslashes, $, ` or newlines", "small"
        )
    return f'"{value}"'


def format_elapse(seconds: float) -> str:
    """PJM's elapse limit ``HH:MM:SS`` (hours may exceed 24).

    >>> format_elapse(3725)
    '01:02:05'
    """
    total = int(-(-seconds // 1))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


@dataclass(frozen=True)
class PjmScript:
    """Everything a ``#PJM`` job script says.

    Attributes:
        name: Job name (``-N``).
        argv: The command run on the allocation, exactly as given.
        nodes: A node count (``-L node=N``) ...
        shape: ... or a shape (``-L node=AxBxC:mode``).
        rscgrp: Resource group, e.g. ``small``.
        elapse_s: Elapse limit in seconds.
        mpi_proc: ``--mpi proc=`` (processes started statically).
        max_proc_per_node: ``--mpi max-proc-per-node=``.
        group: Project group (``-g``).
        env: Environment of the job: ``-x`` for plain values, ``export`` in the body otherwise.
        stdout: ``-o`` file; stderr: ``-e`` file.
        stats: ``-s`` (a statistics file per job).
        mpiexec: Run ``argv`` under ``mpiexec`` (with ``vcoordfile`` when given).
        vcoordfile: Path of a rank placement file for Fujitsu MPI's ``-vcoordfile``.
        export_all: ``-X``: the job inherits the submitter's environment.
        trap_term: The script survives PJM's SIGTERM (elapse, pjdel) until its command has
            ended, so the command's processes have the grace period to checkpoint.
    """

    name: str
    argv: Sequence[str]
    nodes: int | None = None
    shape: Shape | None = None
    rscgrp: str | None = None
    elapse_s: float | None = None
    mpi_proc: int | None = None
    max_proc_per_node: int | None = None
    group: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    stdout: str | None = None
    stderr: str | None = None
    stats: bool = False
    mpiexec: bool = False
    vcoordfile: str | None = None
    export_all: bool = False
    trap_term: bool = False


def _resource_directives(spec: PjmScript) -> list[str]:
    """``#PJM -N/-L/--mpi/-g`` lines: name, shape, resource group, elapse, processes, group."""
    node = str(spec.nodes) if spec.shape is None else str(spec.shape)
    lines = [f"#PJM -N {_directive_value('name', spec.name)}"]
    lines.append(f"#PJM -L {_directive_value('shape', 'node=' + node)}")
    if spec.rscgrp:
        lines.append(f"#PJM -L {_directive_value('rscgrp', 'rscgrp=' + spec.rscgrp)}")
    if spec.elapse_s is not None:
        lines.append(f'#PJM -L "elapse={format_elapse(spec.elapse_s)}"')
    if spec.mpi_proc is not None:
        lines.append(f'#PJM --mpi "proc={int(spec.mpi_proc)}"')
    if spec.max_proc_per_node is not None:
        lines.append(f'#PJM --mpi "max-proc-per-node={int(spec.max_proc_per_node)}"')
    if spec.group:
        lines.append(f"#PJM -g {_directive_value('group', spec.group)}")
    return lines


def _environment_lines(env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """``#PJM -x`` directives for plain values, ``export`` lines for the others."""
    directives, exports = [], []
    for key, value in sorted(env.items()):
        if not _ENV_NAME.match(key):
            raise InvalidRequestError("env", key, "not a valid variable name", "OMP_NUM_THREADS")
        if _SAFE_ENV_VALUE.match(value) and "," not in value:
            directives.append(f'#PJM -x "{key}={value}"')
        else:
            # -x splits on commas and PJM's own quoting is not documented: export in the body.
            exports.append(f"export {key}={shell_word(value, 'env')}")
    return directives, exports


def render_pjm_script(spec: PjmScript) -> str:
    """The job script text for ``spec``.

    Raises:
        InvalidRequestError: for a value that cannot be quoted safely, naming the field.
    """
    if (spec.nodes is None) == (spec.shape is None):
        raise InvalidRequestError("nodes", spec.nodes, "give nodes or shape (not both)", "4")
    if not spec.argv:
        raise InvalidRequestError("argv", list(spec.argv), "the command is empty", "['hostname']")
    lines = ["#!/bin/bash", *_resource_directives(spec)]
    directives, exports = _environment_lines(spec.env)
    lines.extend(directives)
    if spec.stdout:
        lines.append(f"#PJM -o {_directive_value('stdout', spec.stdout)}")
    if spec.stderr:
        lines.append(f"#PJM -e {_directive_value('stderr', spec.stderr)}")
    if spec.stats:
        lines.append("#PJM -s")
    if spec.export_all:
        lines.append("#PJM -X")
    lines.append("set -eu")
    if spec.trap_term:
        # A trapped signal waits for the foreground command; the command still gets it.
        lines.append("trap : TERM")
    lines.extend(exports)
    command = " ".join(shell_word(a) for a in spec.argv)
    if spec.mpiexec:
        prefix = "mpiexec"
        if spec.vcoordfile:
            prefix += f" -vcoordfile {shlex.quote(spec.vcoordfile)}"
        command = f"{prefix} {command}"
    lines.append(command)
    return "\n".join(lines) + "\n"


def pjsub_argv(
    script_path: str,
    *,
    bulk: tuple[int, int] | None = None,
    step_after: str | None = None,
    step_condition: str | None = None,
) -> list[str]:
    """The pjsub command line: plain, bulk (``--bulk --sparam "0-99"``) or a step of a job.

    Args:
        bulk: ``(first, last)`` sub-job numbers (PJM_BULKNUM in each).
        step_after: The step job id to append to (``--step --sparam jid=...``).
        step_condition: A PJM step dependency, e.g. ``ec!=0:one:1``.
    """
    argv = ["pjsub"]
    if bulk is not None:
        first, last = bulk
        if not 0 <= first <= last:
            raise InvalidRequestError("array", f"{first}-{last}", "need 0 <= first <= last", "0-99")
        argv += ["--bulk", "--sparam", f"{first}-{last}"]
    if step_after is not None:
        sparam = f"jid={step_after}"
        if step_condition:
            sparam += f",sd={step_condition}"
        argv += ["--step", "--sparam", sparam]
    argv.append(script_path)
    return argv


def vcoord_file(coords: Sequence[tuple[int, ...]]) -> str:
    """A Fujitsu MPI ``-vcoordfile``: one ``(x,y,z)`` line per rank, in rank order."""
    return "".join("(" + ",".join(str(c) for c in xyz) + ")\n" for xyz in coords)


_MESSAGE = re.compile(r"^\[(INFO|ERR\.|WARN)\]\s+PJM\s+(\d{4})\s+(\S+)\s+(.*)$")
_SUBMITTED = re.compile(r"Job\s+(\S+)\s+submitted\.")
_ACCEPTED = re.compile(r"Accepted job\s+(\S+?)\.?$")


def _messages(text: str) -> list[tuple[str, str, str, str]]:
    out = []
    for line in text.splitlines():
        match = _MESSAGE.match(line.strip())
        if match:
            level, code, command, message = match.groups()
            out.append((level, code, command, message.strip()))
    return out


def _raise_errors(text: str) -> None:
    for level, code, command, message in _messages(text):
        if level == "ERR.":
            raise PJM_ERRORS.get(code, PjmError)(code, command, message)


def parse_pjsub(text: str) -> str:
    """The job id from pjsub's output (``12345``, ``64856_0`` for a step, bulk ids as printed).

    Raises:
        PjmError: for an ``[ERR.]`` line, or when no ``submitted`` line is present.

    >>> parse_pjsub("[INFO] PJM 0000 pjsub Job 9714 submitted.")
    '9714'
    """
    _raise_errors(text)
    for _, _, _, message in _messages(text):
        match = _SUBMITTED.search(message)
        if match:
            return match.group(1)
    raise PjmError("----", "pjsub", f"no job id in output: {text.strip()[:200]!r}")


def parse_pjdel(text: str) -> list[str]:
    """Job ids pjdel accepted. Raises :class:`PjmError` on an ``[ERR.]`` line."""
    _raise_errors(text)
    ids = []
    for _, _, _, message in _messages(text):
        match = _ACCEPTED.search(message)
        if match:
            ids.append(match.group(1))
    return ids


@dataclass(frozen=True)
class PjmJobStatus:
    """One row of pjstat, with the columns we use; ``columns`` keeps all of them."""

    job_id: str
    name: str
    state: str
    columns: Mapping[str, str]
    start: str | None
    planned_start: bool

    @property
    def our_state(self) -> JobState:
        return final_state(self.state, None)


_DATE_COLUMNS = {"START_DATE", "END_DATE", "ACCEPT", "ACCEPT_DATE"}


def parse_pjstat(text: str) -> list[PjmJobStatus]:
    """Rows of ``pjstat`` (default or ``-v`` columns), keyed by the header line's names.

    Date columns take two tokens (``11/17 09:01:41``), or one parenthesised pair for a planned
    start (``(11/17 10:00:00)``); every other column is one token.

    Raises:
        PjmError: on an ``[ERR.]`` line or a row that does not fit the header.
    """
    _raise_errors(text)
    lines = [line for line in text.splitlines() if line.strip()]
    header_index = next((i for i, line in enumerate(lines) if "JOB_ID" in line.split()), None)
    if header_index is None:
        return []
    names = lines[header_index].split()
    rows = []
    for line in lines[header_index + 1 :]:
        tokens = line.split()
        values: dict[str, str] = {}
        i = 0
        for name in names:
            if i >= len(tokens):
                raise PjmError("----", "pjstat", f"row shorter than the header: {line!r}")
            token = tokens[i]
            if name in _DATE_COLUMNS and token != "-" and i + 1 < len(tokens):
                token = f"{token} {tokens[i + 1]}"
                i += 1
            values[name] = token
            i += 1
        if i != len(tokens):
            raise PjmError("----", "pjstat", f"row longer than the header: {line!r}")
        start = values.get("START_DATE")
        planned = bool(start and start.startswith("("))
        rows.append(
            PjmJobStatus(
                job_id=values["JOB_ID"],
                name=values.get("JOB_NAME", ""),
                state=values.get("ST", values.get("STATE", "")),
                columns=values,
                start=None if start in (None, "-") else start.strip("()"),
                planned_start=planned,
            )
        )
    return rows
