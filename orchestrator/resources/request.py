"""Job requests: how many nodes (or which PJM-style shape), for how long, for whom.

A request is validated when it is created; ``Cluster.check_request``
(:mod:`orchestrator.resources.cluster`) validates it against a cluster. Errors are
:class:`~orchestrator.exceptions.InvalidRequestError`, naming the field, the value and a valid
example.

>>> parse_shape("4x6x16:torus")
Shape(extents=(4, 6, 16), mode=<ShapeMode.TORUS: 'torus'>, strict=False)
>>> str(parse_shape("2x3:mesh:strict"))
'2x3:mesh:strict'
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from orchestrator.exceptions import InvalidRequestError

__all__ = ["JobRequest", "Shape", "ShapeMode", "parse_duration", "parse_memory", "parse_shape"]

_SHAPE_EXAMPLE = "4x6x16:torus"


class ShapeMode(StrEnum):
    """PJM's ``-L node=...`` suffixes.

    ``torus``: a contiguous box in whole allocation units, may wrap around the machine's torus.
    ``mesh``: a contiguous box in nodes, no wrap-around.
    ``noncont``: any nodes, compact if possible.
    """

    TORUS = "torus"
    MESH = "mesh"
    NONCONT = "noncont"


@dataclass(frozen=True, slots=True)
class Shape:
    """A node shape of rank 1 to 3, with its placement mode and whether axes may be swapped."""

    extents: tuple[int, ...]
    mode: ShapeMode = ShapeMode.MESH
    strict: bool = False

    @property
    def volume(self) -> int:
        return math.prod(self.extents)

    @property
    def extents3(self) -> tuple[int, int, int]:
        """The extents padded to rank 3 with 1s."""
        e = (*self.extents, 1, 1)
        return (e[0], e[1], e[2])

    def __str__(self) -> str:
        text = "x".join(str(e) for e in self.extents) + f":{self.mode.value}"
        return text + (":strict" if self.strict else "")


_DIM = re.compile(r"[0-9]{1,9}")
"""An extent: ASCII digits (``\\d`` takes ``٣``), few enough for ``int`` to be cheap."""


def parse_shape(text: str) -> Shape:
    """Parse PJM's ``node=`` value: ``A``, ``AxB`` or ``AxBxC``, then ``:torus|:mesh|:noncont``
    and ``:strict`` in any order. Without a mode suffix the shape is a ``:mesh``.

    Raises:
        InvalidRequestError: naming field ``shape``.
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequestError("shape", text, "expected a shape like AxBxC", _SHAPE_EXAMPLE)
    dims_text, *suffixes = text.strip().lower().split(":")
    parts = dims_text.split("x")
    if not 1 <= len(parts) <= 3:
        raise InvalidRequestError(
            "shape", text, f"rank {len(parts)} is not 1, 2 or 3", _SHAPE_EXAMPLE
        )
    extents = []
    for p in parts:
        if not _DIM.fullmatch(p.strip()):
            raise InvalidRequestError(
                "shape",
                text,
                f"extent {p[:20]!r} is not a positive integer (at most 9 digits)",
                _SHAPE_EXAMPLE,
            )
        value = int(p)
        if value < 1:
            raise InvalidRequestError("shape", text, "every extent must be >= 1", _SHAPE_EXAMPLE)
        extents.append(value)
    mode: ShapeMode | None = None
    strict = False
    for suffix in suffixes:
        if suffix == "strict":
            strict = True
        elif suffix in ShapeMode.__members__.values():
            if mode is not None:
                raise InvalidRequestError(
                    "shape", text, "more than one of :torus, :mesh, :noncont", _SHAPE_EXAMPLE
                )
            mode = ShapeMode(suffix)
        else:
            raise InvalidRequestError(
                "shape",
                text,
                f"unknown suffix ':{suffix}' (known: :torus, :mesh, :noncont, :strict)",
                _SHAPE_EXAMPLE,
            )
    return Shape(tuple(extents), mode or ShapeMode.MESH, strict)


_GROUP = "([0-9]{1,12})"
_DURATION = re.compile(f"^(?:{_GROUP}-)?(?:{_GROUP}:)?(?:{_GROUP}:)?{_GROUP}$")
"""ASCII digits (``\\d`` takes ``٣``), at most 12 in a group: the seconds stay a finite float."""


def parse_duration(value: str | float | int, field_name: str = "walltime") -> float:
    """Seconds from a number or Slurm/PJM time text: ``90``, ``10:00``, ``1:00:00``, ``2-00:00:00``.

    A bare number is seconds. Raises :class:`InvalidRequestError` for anything else.
    """
    if isinstance(value, bool):
        raise InvalidRequestError(field_name, value, "expected a duration", "1:00:00")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond a float's range
            raise InvalidRequestError(field_name, value, "too large", "3600") from None
        if not math.isfinite(seconds) or seconds <= 0:
            raise InvalidRequestError(field_name, value, "must be > 0 seconds", "3600")
        return seconds
    match = _DURATION.match(str(value).strip())
    if not match:
        raise InvalidRequestError(
            field_name, value, "expected seconds, [[h:]m:]s or d-h:m:s", "1:00:00"
        )
    days, a, b, c = match.groups()
    # With two colon groups the fields are h:m:s, with one m:s, with none s.
    fields = [int(x) for x in (a, b, c) if x is not None]
    seconds = 0
    for unit, v in zip((1, 60, 3600), reversed(fields), strict=False):
        seconds += unit * v
    seconds += int(days or 0) * 86400
    if seconds <= 0:
        raise InvalidRequestError(field_name, value, "must be > 0 seconds", "1:00:00")
    return float(seconds)


_MEMORY = re.compile(r"^([0-9]{1,12})([KMGT]?)B?$")
_MEMORY_MB = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def parse_memory(value: str | int, field_name: str = "mem") -> int:
    """Megabytes from Slurm's memory text: ``4000`` (MB), ``500M``, ``4G``, ``1T`` (units of
    1024, as Slurm's), or an int (MB). Rounded up to whole MB.

    >>> parse_memory("4G"), parse_memory("500M"), parse_memory(1000)
    (4096, 500, 1000)
    """
    if isinstance(value, bool):
        raise InvalidRequestError(field_name, value, "expected a memory size", "4G")
    if isinstance(value, int):
        if value < 0:
            raise InvalidRequestError(field_name, value, "must be >= 0", "4G")
        return value
    match = _MEMORY.match(str(value).strip().upper())
    if not match:
        raise InvalidRequestError(
            field_name, value, "expected a size in MB or with a unit K, M, G or T", "4G"
        )
    return math.ceil(int(match.group(1)) * _MEMORY_MB[match.group(2)])


def _check_int(name: str, value: Any, minimum: int, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(name, value, "must be an integer", example)
    if value < minimum:
        raise InvalidRequestError(name, value, f"must be >= {minimum}", example)


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What a job asks for. Either ``nodes`` or ``shape``, never both.

    Attributes:
        nodes: Number of nodes, placed anywhere (compactly where the topology allows).
        shape: A PJM-style shape; a ``str`` is parsed with :func:`parse_shape`.
        walltime_s: Limit after which the job is killed (None: unlimited).
        estimate_s: Runtime estimate for backfilling and SJF (default: the walltime).
        priority: User- or admin-given priority; larger runs earlier under ``multifactor``.
        submit_time: Seconds on the scheduler's clock.
        gpus_per_task: GPUs each task needs (Slurm's ``--gpus-per-task``).
        gpus_per_node: GPUs the job needs on each node, not tied to tasks
            (``--gpus-per-node``); the node needs the larger of the two.
        mem_per_node_mb: Memory per node in MB (0: on a shared cluster, the node's memory in
            proportion to the cores asked, as Slurm's ``DefMemPerCPU``).
        exclusive: Whole nodes on a shared cluster (whole-node clusters always give them).
        partition: The node group to run in ("" for the cluster's default one).
    """

    nodes: int | None = None
    shape: Shape | None = None
    tasks_per_node: int = 1
    cpus_per_task: int = 1
    gpus_per_task: int = 0
    mem_per_node_mb: int = 0
    walltime_s: float | None = None
    estimate_s: float | None = None
    priority: int = 0
    user: str = "user"
    account: str = ""
    submit_time: float = 0.0
    name: str = field(default="")
    gpus_per_node: int = 0
    exclusive: bool = False
    partition: str = ""
    # Derived once at creation: the scheduler reads both for every job at every pass.
    node_count: int = field(init=False, repr=False, compare=False)
    """Nodes asked for (the shape's volume for a shape)."""
    estimate: float = field(init=False, repr=False, compare=False)
    """Runtime estimate in seconds (estimate, else walltime, else +inf)."""

    def __post_init__(self) -> None:
        if isinstance(self.shape, str):
            object.__setattr__(self, "shape", parse_shape(self.shape))
        if self.nodes is None and self.shape is None:
            raise InvalidRequestError("nodes", None, "give nodes or shape", "nodes=4")
        if self.nodes is not None and self.shape is not None:
            raise InvalidRequestError(
                "shape", str(self.shape), "give nodes or shape, not both", _SHAPE_EXAMPLE
            )
        if self.nodes is not None:
            _check_int("nodes", self.nodes, 1, "4")
        _check_int("tasks_per_node", self.tasks_per_node, 1, "1")
        _check_int("cpus_per_task", self.cpus_per_task, 1, "1")
        _check_int("gpus_per_task", self.gpus_per_task, 0, "0")
        _check_int("mem_per_node_mb", self.mem_per_node_mb, 0, "4000")
        _check_int("gpus_per_node", self.gpus_per_node, 0, "1")
        if not isinstance(self.exclusive, bool):
            raise InvalidRequestError("exclusive", self.exclusive, "must be true or false", "true")
        if not isinstance(self.partition, str):
            raise InvalidRequestError("partition", self.partition, "must be a string", "gpu")
        _check_int("priority", self.priority, -(2**31), "0")
        for name in ("walltime_s", "estimate_s"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, parse_duration(value, name))
        if not isinstance(self.submit_time, int | float) or not math.isfinite(self.submit_time):
            raise InvalidRequestError("submit_time", self.submit_time, "must be a number", "0")
        if not isinstance(self.user, str) or not self.user:
            raise InvalidRequestError("user", self.user, "must be a non-empty string", "alice")
        count = self.nodes if self.nodes is not None else self.shape.volume  # type: ignore[union-attr]
        object.__setattr__(self, "node_count", count)
        if self.estimate_s is not None:
            estimate = self.estimate_s
        else:
            estimate = self.walltime_s if self.walltime_s is not None else math.inf
        object.__setattr__(self, "estimate", estimate)

    @property
    def cpus_on_node(self) -> int:
        """Cores the job needs on each node."""
        return self.tasks_per_node * self.cpus_per_task

    @property
    def gpus_on_node(self) -> int:
        """GPUs the job needs on each node."""
        return max(self.gpus_per_node, self.tasks_per_node * self.gpus_per_task)
