"""Submission payloads: validated field by field, with errors that name the field.

The model :class:`~orchestrator.daemon.models.JobSubmission` says what a submission may contain
(it also makes the API's OpenAPI document); :meth:`JobSpec.from_mapping` validates a decoded JSON
object against it, then checks what needs a parser or the text rules. Unknown fields are
refused, never ignored; JSON ``null`` means the field's default (:data:`DEFAULTS`).

>>> parse_array("0-9:3%2")
ArraySpec(indices=(0, 3, 6, 9), limit=2)
>>> parse_dependency("afterok:4:5,afterany:6")
(('afterok', 4), ('afterok', 5), ('afterany', 6))
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from orchestrator.daemon.models import JobSubmission, example_of
from orchestrator.daemon.text_rules import check_text
from orchestrator.exceptions import InvalidRequestError
from orchestrator.resources.request import JobRequest, parse_duration, parse_memory
from orchestrator.timeparse import parse_time

__all__ = [
    "DEFAULTS",
    "DEPENDENCY_KINDS",
    "MAX_ARRAY_SIZE",
    "ArraySpec",
    "JobSpec",
    "OversizedInt",
    "ascii_digits",
    "json_int",
    "login_name",
    "parse_array",
    "parse_begin",
    "parse_dependency",
]

MAX_ARRAY_SIZE = 10_000
MAX_ARRAY_INDEX = 1_000_000
MAX_ID = 2**62
MAX_ARGV_BYTES = 128 * 1024
MAX_SCRIPT_BYTES = 1024 * 1024
MAX_JSON_INT_DIGITS = 300
"""Longer JSON integers are out of range for every field (and for a float): they stay text."""
DEPENDENCY_KINDS = ("afterok", "afterany", "afternotok")


class OversizedInt:
    """A JSON integer too long for any field, kept as its text: never converted (``int`` refuses
    more than 4,300 digits, ``float`` overflows), refused naming its field."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"<integer of {len(self.text.lstrip('-'))} digits>"


def json_int(text: str) -> int | OversizedInt:
    """``parse_int`` for :func:`json.loads`: an ``int``, or an :class:`OversizedInt`."""
    return OversizedInt(text) if len(text) > MAX_JSON_INT_DIGITS else int(text)


def ascii_digits(text: str, most: int) -> bool:
    """Whether ``text`` is 1 to ``most`` ASCII digits (``str.isdigit`` takes ``²``, ``int`` and
    ``\\d`` take ``٣``; more digits than a field can use are refused before ``int`` runs)."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


DEFAULTS: Mapping[str, Any] = {
    "name": "",
    "tasks_per_node": 1,
    "cpus_per_task": 1,
    "gpus_per_task": 0,
    "mem_per_node_mb": 0,
    "gpus_per_node": 0,
    "exclusive": False,
    "partition": "",
    "priority": 0,
    "account": "",
    "retries": 0,
    "hold": False,
}
"""What a field that is absent or JSON ``null`` means (``user``: the submitting login name)."""


@functools.cache
def login_name() -> str:
    """The real login name of this process's user (not ``$USER``, which a caller may set); read
    once (``getpwuid`` reads the passwd database: a tenth of a millisecond per call)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (some containers)
        return str(os.getuid())


def _field_error(error: ValidationError, data: Mapping[str, Any]) -> InvalidRequestError:
    """The first field pydantic refused, as the API's error (a union's alternatives joined)."""
    problems = error.errors(include_url=False)
    first = problems[0]
    loc = first["loc"]
    if not loc:
        return InvalidRequestError(
            "job", type(first["input"]).__name__, "expected a JSON object", '{"argv": ["true"]}'
        )
    name = str(loc[0])
    if first["type"] == "extra_forbidden":
        known = ", ".join(JobSubmission.model_fields)
        return InvalidRequestError(
            name, first["input"], f"unknown field {name!r} (known: {known})", "nodes=1"
        )
    reasons = dict.fromkeys(p["msg"] for p in problems if p["loc"] and p["loc"][0] == loc[0])
    value = data.get(name, first["input"])
    return InvalidRequestError(name, value, "; or ".join(reasons), example_of(name))


@dataclass(frozen=True)
class ArraySpec:
    """Array indices and the most that may run at once (None: no limit)."""

    indices: tuple[int, ...]
    limit: int | None = None


_ARRAY_PART = re.compile(r"^([0-9]+)(?:-([0-9]+)(?::([0-9]+))?)?$")


def parse_array(text: str) -> ArraySpec:
    """Parse Slurm's ``--array``: ``0-99``, ``1,3,5-7``, ``0-15:4``, any of them ``%N``.

    Raises:
        InvalidRequestError: naming field ``array``.
    """
    body, sep, limit_text = text.strip().partition("%")
    limit: int | None = None
    if sep:
        if not ascii_digits(limit_text, 9) or int(limit_text) < 1:
            raise InvalidRequestError(
                "array", text, "the %N limit must be an integer >= 1", "0-99%8"
            )
        limit = int(limit_text)
    indices: set[int] = set()
    for part in body.split(","):
        m = _ARRAY_PART.match(part.strip())
        if m is None:
            raise InvalidRequestError("array", text, f"cannot parse {part!r}", "0-99%8")
        if any(g is not None and len(g) > 9 for g in m.groups()):
            raise InvalidRequestError(
                "array", text, f"indices must be at most {MAX_ARRAY_INDEX}", "0-99%8"
            )
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        step = int(m.group(3)) if m.group(3) is not None else 1
        if hi > MAX_ARRAY_INDEX:
            raise InvalidRequestError(
                "array", text, f"indices must be at most {MAX_ARRAY_INDEX}", "0-99%8"
            )
        if hi < lo or step < 1:
            raise InvalidRequestError("array", text, f"empty range {part!r}", "0-99%8")
        if (hi - lo) // step + 1 + len(indices) > MAX_ARRAY_SIZE:
            raise InvalidRequestError(
                "array", text, f"more than {MAX_ARRAY_SIZE} elements", "0-99%8"
            )
        indices.update(range(lo, hi + 1, step))
    return ArraySpec(tuple(sorted(indices)), limit)


def parse_dependency(text: str) -> tuple[tuple[str, int], ...]:
    """Parse Slurm's ``--dependency``: ``afterok:12:13,afterany:14`` (all must hold).

    Raises:
        InvalidRequestError: naming field ``dependency``.
    """
    out: list[tuple[str, int]] = []
    for part in text.strip().split(","):
        kind, *ids = part.strip().split(":")
        if kind not in DEPENDENCY_KINDS:
            raise InvalidRequestError(
                "dependency",
                text,
                f"unknown kind {kind!r} (known: {', '.join(DEPENDENCY_KINDS)})",
                "afterok:12",
            )
        if not ids or not all(ascii_digits(i, 19) and int(i) < MAX_ID for i in ids):
            raise InvalidRequestError(
                "dependency", text, f"{kind} needs job ids, e.g. {kind}:12:13", "afterok:12"
            )
        out.extend((kind, int(i)) for i in ids)
    return tuple(out)


def format_dependency(deps: tuple[tuple[str, int], ...]) -> str:
    """The canonical text of parsed dependencies (inverse of :func:`parse_dependency`)."""
    return ",".join(f"{kind}:{job_id}" for kind, job_id in deps)


_GRES = re.compile(r"^gpu(?::[A-Za-z0-9_.-]{1,32})?:([0-9]{1,4})$")


def _gpus_and_memory(values: Mapping[str, Any]) -> tuple[int, int]:
    """GPUs and memory per node from Slurm's several ways of saying them: ``gpus_per_node``,
    ``gres`` (``gpu:2``, ``gpu:h100:2``), ``gpus`` (in all, spread evenly over the nodes);
    ``mem_per_node_mb``, ``mem`` (``4G``), ``mem_per_gpu``. Two ways at once are refused."""
    per_node: int = values["gpus_per_node"]
    _one_way(values, ("gpus_per_node", "gres", "gpus"), "GPUs", "1")
    if values.get("gres") is not None:
        match = _GRES.match(values["gres"].strip())
        if match is None:
            raise InvalidRequestError(
                "gres", values["gres"], "only GPUs are known: gpu:N or gpu:TYPE:N", "gpu:2"
            )
        per_node = int(match.group(1))
    if values.get("gpus") is not None:
        total = int(values["gpus"])
        nodes = values["nodes"] or 1
        if total < 0 or total % nodes:
            raise InvalidRequestError(
                "gpus", total, f"must spread evenly over the {nodes} nodes", str(nodes)
            )
        per_node = total // nodes
    memory: int = values["mem_per_node_mb"]
    _one_way(values, ("mem_per_node_mb", "mem", "mem_per_gpu"), "memory", "4G")
    if values.get("mem") is not None:
        memory = parse_memory(values["mem"], "mem")
    if values.get("mem_per_gpu") is not None:
        gpus = max(per_node, values["tasks_per_node"] * values["gpus_per_task"])
        if not gpus:
            raise InvalidRequestError(
                "mem_per_gpu", values["mem_per_gpu"], "the job asks for no GPUs", "--gpus 1"
            )
        memory = parse_memory(values["mem_per_gpu"], "mem_per_gpu") * gpus
    return per_node, memory


def _one_way(values: Mapping[str, Any], names: tuple[str, ...], what: str, example: str) -> None:
    """Refuse a request that says ``what`` in more than one of the fields ``names``."""
    given = [name for name in names if values.get(name)]
    if len(given) > 1:
        raise InvalidRequestError(
            given[1], values[given[1]], f"give {what} one way, not {' and '.join(given)}", example
        )


def apply_resource_type(spec: JobSpec, types: Mapping[str, Any], cluster: str) -> JobSpec:
    """``spec`` with its named resource type (``NAME`` or ``NAME=N``) made a request: N nodes
    with one task each holding one unit (a whole node for an exclusive type).

    Raises:
        InvalidRequestError: naming ``resource_type``, for a name the cluster has not.
    """
    if spec.resource_type is None:
        return spec
    text = spec.resource_type.strip()
    name, _, count_text = text.partition("=")
    unit = types.get(name)
    known = ", ".join(sorted(types)) or "none"
    if unit is None:
        raise InvalidRequestError(
            "resource_type",
            text,
            f"cluster {cluster!r} has no resource type {name!r} (known: {known})",
            f"{next(iter(sorted(types)), 'NAME')}=1",
        )
    if count_text and not ascii_digits(count_text, 6):
        raise InvalidRequestError("resource_type", text, "N must be a count", f"{name}=1")
    count = int(count_text) if count_text else 1
    fields: dict[str, Any] = {"nodes": count, "shape": None, "tasks_per_node": 1}
    if unit.exclusive:
        fields["exclusive"] = True
    else:
        fields.update(
            cpus_per_task=unit.cpus,
            gpus_per_task=0,
            gpus_per_node=unit.gpus,
            mem_per_node_mb=unit.memory_mb,
            exclusive=False,
        )
    request = dataclasses.replace(spec.request, **fields)
    return dataclasses.replace(spec, request=request, resource_type=None)


def _check_command(argv: list[str] | None, script: str | None) -> None:
    """Exactly one of a command or a script, each within its size."""
    if (argv is None) == (script is None):
        raise InvalidRequestError(
            "argv", argv, "give exactly one of argv or script", '["python", "train.py"]'
        )
    if argv is not None:
        for item in argv:
            # CR and LF are kept: a ``python -c`` program is one argument.
            check_text("argv", item, example='["python", "train.py"]')
        if sum(len(a) for a in argv) > MAX_ARGV_BYTES:
            raise InvalidRequestError(
                "argv", argv[:3], "longer than 128 KiB", '["python", "train.py"]'
            )
    if script is not None and len(script) > MAX_SCRIPT_BYTES:
        raise InvalidRequestError("script", script[:40], "longer than 1 MiB", "#!/bin/sh")


def _check_env(env: dict[str, str]) -> None:
    """Variable names like ``FOO_1``; values any text but NUL and lone surrogates."""
    for k, v in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise InvalidRequestError(
                "env", {k: v}, "names like FOO_1, string values", '{"SEED": "1"}'
            )
        # CR and LF are kept: a PEM key or a JSON document is one value.
        check_text(f"env.{k}", v, example="1")


_BEGIN_EXAMPLE = "now+1hour"


def parse_begin(value: str | float | int, now: float) -> float:
    """When a job may start, as epoch seconds, from sbatch's ``--begin`` forms
    (:func:`orchestrator.timeparse.parse_time`; a time of day is its next occurrence). A time
    already past means "now".

    >>> parse_begin("now+2hours", 1000.0)
    8200.0

    Raises:
        InvalidRequestError: anything else.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not 0 <= value < 1e11:  # finite, and before the year 5000
            raise InvalidRequestError("begin", value, "expected epoch seconds", _BEGIN_EXAMPLE)
        return float(value)
    try:
        return parse_time(str(value), now, next_time_of_day=True)
    except ValueError as e:
        raise InvalidRequestError("begin", value, str(e), _BEGIN_EXAMPLE) from None


@dataclass(frozen=True)
class JobSpec:
    """A validated submission (before the cluster check and dependency lookup)."""

    request: JobRequest
    argv: tuple[str, ...] | None
    script: str | None
    array: ArraySpec | None
    dependency: tuple[tuple[str, int], ...]
    retries: int
    hold: bool
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    begin: float | None = None
    """Earliest start, epoch seconds (None: as soon as it can)."""
    resource_type: str | None = None
    """A named resource type of the cluster (``rt_HG`` or ``node_q=2``), applied by the daemon
    with :func:`apply_resource_type` (only it knows the cluster)."""

    def filed_under(self, user: str) -> JobSpec:
        """This job, filed under ``user`` (the caller the API authenticated)."""
        if self.request.user == user:
            return self
        return dataclasses.replace(self, request=dataclasses.replace(self.request, user=user))

    @classmethod
    def from_mapping(cls, data: Any, prefix: str = "", now: float = 0.0) -> JobSpec:
        """Validate a JSON object.

        Args:
            data: The decoded JSON value.
            prefix: Prepended to field names in errors (``jobs[3].``).
            now: The submit time.

        Raises:
            InvalidRequestError: the first field at fault, named with ``prefix``.
        """
        try:
            return cls._from_mapping(data, now)
        except InvalidRequestError as e:
            if not prefix:
                raise
            raise InvalidRequestError(prefix + e.field, e.value, e.reason, e.example) from e

    @classmethod
    def _from_mapping(cls, data: Any, now: float) -> JobSpec:
        if not isinstance(data, dict):
            raise InvalidRequestError(
                "job",
                type(data).__name__,
                "expected a JSON object",
                '{"argv": ["true"], "nodes": 1}',
            )
        try:
            submission = JobSubmission.model_validate(data)
        except ValidationError as e:
            raise _field_error(e, data) from None
        values: dict[str, Any] = {
            name: DEFAULTS.get(name) if value is None else value
            for name, value in submission.model_dump().items()
        }
        if values["user"] is None:
            values["user"] = login_name()
        for name, value in values.items():
            if isinstance(value, str):
                # Every string field is a name (one line of printable text) but the script;
                # NUL and lone surrogates are refused everywhere (text_rules says why).
                check_text(name, value, single_line=name != "script", example=example_of(name))
        argv, script = values["argv"], values["script"]
        _check_command(argv, script)
        retries = values["retries"]
        env = values["env"] or {}
        _check_env(env)
        workdir = values["workdir"]
        if workdir is not None and not workdir.startswith("/"):
            raise InvalidRequestError("workdir", workdir, "must be an absolute path", "/tmp")
        walltime = parse_duration(values["time"], "time") if values["time"] is not None else None
        estimate = (
            parse_duration(values["estimate"], "estimate")
            if values["estimate"] is not None
            else None
        )
        gpus_per_node, mem_per_node_mb = _gpus_and_memory(values)
        request = JobRequest(
            nodes=values["nodes"],
            shape=values["shape"],
            tasks_per_node=values["tasks_per_node"],
            cpus_per_task=values["cpus_per_task"],
            gpus_per_task=values["gpus_per_task"],
            gpus_per_node=gpus_per_node,
            mem_per_node_mb=mem_per_node_mb,
            exclusive=values["exclusive"],
            partition=values["partition"],
            walltime_s=walltime,
            estimate_s=estimate,
            priority=values["priority"],
            user=values["user"],
            account=values["account"],
            submit_time=now,
            name=values["name"],
        )
        return cls(
            request=request,
            resource_type=values["resource_type"],
            argv=tuple(argv) if argv is not None else None,
            script=script,
            array=parse_array(values["array"]) if values["array"] is not None else None,
            dependency=(
                parse_dependency(values["dependency"]) if values["dependency"] is not None else ()
            ),
            retries=retries,
            hold=values["hold"],
            env=dict(env),
            workdir=workdir,
            begin=parse_begin(values["begin"], now) if values["begin"] is not None else None,
        )
