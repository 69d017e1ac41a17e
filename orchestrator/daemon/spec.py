"""Submission payloads: validated field by field, with errors that name the field.

One table (:data:`FIELDS`) says what a job submission may contain; it drives the validation of
JSON payloads (the API), the CLI's request, and the JSON schema in the OpenAPI document, so the
three cannot disagree. Unknown fields are refused, never ignored.

>>> parse_array("0-9:3%2")
ArraySpec(indices=(0, 3, 6, 9), limit=2)
>>> parse_dependency("afterok:4:5,afterany:6")
(('afterok', 4), ('afterok', 5), ('afterany', 6))
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.daemon.text_rules import check_text
from orchestrator.exceptions import InvalidRequestError
from orchestrator.resources.request import JobRequest, parse_duration

__all__ = [
    "DEPENDENCY_KINDS",
    "FIELDS",
    "MAX_ARRAY_SIZE",
    "ArraySpec",
    "JobSpec",
    "OversizedInt",
    "json_int",
    "json_schema",
    "parse_array",
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


def _digits(text: str, most: int) -> bool:
    """Whether ``text`` is 1 to ``most`` ASCII digits (``str.isdigit`` takes ``²``, ``int`` and
    ``\\d`` take ``٣``; more digits than a field can use are refused before ``int`` runs)."""
    return 0 < len(text) <= most and text.isascii() and text.isdigit()


@dataclass(frozen=True)
class _Field:
    types: tuple[str, ...]
    default: Any
    doc: str
    example: str


FIELDS: Mapping[str, _Field] = {
    "argv": _Field(
        ("array",),
        None,
        "The command and its arguments, run without a shell.",
        '["python", "train.py"]',
    ),
    "script": _Field(
        ("string",), None, "A script run by its #! line (else /bin/sh).", "#!/bin/sh\\necho hi"
    ),
    "name": _Field(("string",), "", "Job name (at most 256 characters).", "train"),
    "nodes": _Field(("integer",), None, "Number of nodes (or give shape).", "2"),
    "shape": _Field(("string",), None, "PJM-style node shape on a torus3d cluster.", "2x2x2:torus"),
    "tasks_per_node": _Field(("integer",), 1, "Processes per node.", "1"),
    "cpus_per_task": _Field(("integer",), 1, "CPUs per task.", "1"),
    "gpus_per_task": _Field(("integer",), 0, "GPUs per task.", "0"),
    "mem_per_node_mb": _Field(("integer",), 0, "Memory per node in MB.", "1000"),
    "time": _Field(("string", "number"), None, "Walltime limit: seconds or [d-]h:m:s.", "10:00"),
    "estimate": _Field(("string", "number"), None, "Runtime estimate (default: the time).", "5:00"),
    "priority": _Field(("integer",), 0, "Priority (larger first under multifactor).", "0"),
    "user": _Field(("string",), "user", "Who submits.", "alice"),
    "account": _Field(("string",), "", "Account charged.", "proj1"),
    "array": _Field(
        ("string",), None, "Array indices, Slurm syntax, %N = at most N at once.", "0-99%8"
    ),
    "dependency": _Field(
        ("string",), None, "afterok|afterany|afternotok:ID[:ID],...", "afterok:12"
    ),
    "retries": _Field(("integer",), 0, "Times to requeue a failed attempt (0-100).", "2"),
    "hold": _Field(("boolean",), False, "Submit held (release to run).", "true"),
    "env": _Field(
        ("object",), None, "Extra environment variables (string to string).", '{"SEED": "1"}'
    ),
    "workdir": _Field(
        ("string",), None, "Absolute working directory (default: job folder).", "/tmp"
    ),
}

_JSON_TYPES: Mapping[str, tuple[type, ...]] = {
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
}


def json_schema() -> dict[str, Any]:
    """The JSON schema of one submission (for the OpenAPI document)."""
    props: dict[str, Any] = {}
    for name, f in FIELDS.items():
        types = list(f.types)
        prop: dict[str, Any] = {"description": f.doc}
        if types == ["array"]:
            prop.update({"type": "array", "items": {"type": "string"}, "minItems": 1})
        elif len(types) == 1:
            prop["type"] = types[0]
        else:
            prop["anyOf"] = [{"type": t} for t in types]
        props[name] = prop
    return {"type": "object", "additionalProperties": False, "properties": props}


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
        if not _digits(limit_text, 9) or int(limit_text) < 1:
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
        if not ids or not all(_digits(i, 19) and int(i) < MAX_ID for i in ids):
            raise InvalidRequestError(
                "dependency", text, f"{kind} needs job ids, e.g. {kind}:12:13", "afterok:12"
            )
        out.extend((kind, int(i)) for i in ids)
    return tuple(out)


def format_dependency(deps: tuple[tuple[str, int], ...]) -> str:
    """The canonical text of parsed dependencies (inverse of :func:`parse_dependency`)."""
    return ",".join(f"{kind}:{job_id}" for kind, job_id in deps)


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
        for key in data:
            if key not in FIELDS:
                raise InvalidRequestError(
                    str(key),
                    data[key],
                    f"unknown field {key!r} (known: {', '.join(FIELDS)})",
                    "nodes=1",
                )
        values: dict[str, Any] = {}
        for name, f in FIELDS.items():
            # JSON null means "not given": the field's default (a null name or account crashed
            # the checks below with a 500).
            value = data.get(name)
            if value is None:
                value = f.default
            if isinstance(value, OversizedInt):
                raise InvalidRequestError(name, value, "out of range", f.example)
            if value is not None:
                ok = any(isinstance(value, t) for k in f.types for t in _JSON_TYPES[k])
                # JSON true is a Python int too: a boolean is never a number here.
                if isinstance(value, bool) and "boolean" not in f.types:
                    ok = False
                if not ok:
                    raise InvalidRequestError(
                        name, value, f"expected {' or '.join(f.types)}", f.example
                    )
            values[name] = value
            if isinstance(value, str):
                # Every string field is a name (one line of printable text) but the script;
                # NUL and lone surrogates are refused everywhere (text_rules says why).
                check_text(name, value, single_line=name != "script", example=f.example)
        argv, script = values["argv"], values["script"]
        if (argv is None) == (script is None):
            raise InvalidRequestError(
                "argv", argv, "give exactly one of argv or script", '["python", "train.py"]'
            )
        if argv is not None:
            if not argv or not all(isinstance(a, str) for a in argv):
                raise InvalidRequestError(
                    "argv", argv, "expected a non-empty list of strings", '["python", "train.py"]'
                )
            for item in argv:
                # CR and LF are kept: a ``python -c`` program is one argument.
                check_text("argv", item, example='["python", "train.py"]')
            if sum(len(a) for a in argv) > MAX_ARGV_BYTES:
                raise InvalidRequestError(
                    "argv", argv[:3], "longer than 128 KiB", '["python", "train.py"]'
                )
        if script is not None and len(script) > MAX_SCRIPT_BYTES:
            raise InvalidRequestError("script", script[:40], "longer than 1 MiB", "#!/bin/sh")
        if len(values["name"]) > 256:
            raise InvalidRequestError(
                "name", values["name"][:40], "at most 256 characters", "train"
            )
        for key in ("user", "account"):
            if len(values[key]) > 128:
                raise InvalidRequestError(key, values[key][:40], "at most 128 characters", "alice")
        # Integers the database column can hold (a 64-bit column refuses larger ones).
        for key in (
            "priority",
            "tasks_per_node",
            "cpus_per_task",
            "gpus_per_task",
            "mem_per_node_mb",
            "nodes",
        ):
            value = values[key]
            if value is not None and not -(2**31) <= value < 2**31:
                raise InvalidRequestError(key, value, "out of range", FIELDS[key].example)
        retries = values["retries"]
        if not 0 <= retries <= 100:
            raise InvalidRequestError("retries", retries, "must be 0 to 100", "2")
        env = values["env"] or {}
        for k, v in env.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) or not isinstance(v, str):
                raise InvalidRequestError(
                    "env", {k: v}, "names like FOO_1, string values", '{"SEED": "1"}'
                )
            # CR and LF are kept: a PEM key or a JSON document is one value.
            check_text(f"env.{k}", v, example="1")
        workdir = values["workdir"]
        if workdir is not None and not workdir.startswith("/"):
            raise InvalidRequestError("workdir", workdir, "must be an absolute path", "/tmp")
        walltime = parse_duration(values["time"], "time") if values["time"] is not None else None
        estimate = (
            parse_duration(values["estimate"], "estimate")
            if values["estimate"] is not None
            else None
        )
        request = JobRequest(
            nodes=values["nodes"],
            shape=values["shape"],
            tasks_per_node=values["tasks_per_node"],
            cpus_per_task=values["cpus_per_task"],
            gpus_per_task=values["gpus_per_task"],
            mem_per_node_mb=values["mem_per_node_mb"],
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
        )
