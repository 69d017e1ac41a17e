"""Standard Workload Format (SWF) traces of the Parallel Workloads Archive.

One job a line, 18 whitespace-separated fields; header lines start with ``;`` and may carry
``Key: value`` pairs (``MaxNodes``, ``MaxProcs``, ``UnixStartTime`` ...). A value of ``-1`` means
"missing". Plain and gzip (``.gz``) files are read.

Reading is fast (pandas' C parser); when a file is malformed the reader re-reads it line by line
to name the file, the line number and the field at fault.
"""

from __future__ import annotations

import gzip
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np
import pandas as pd

from orchestrator.exceptions import TraceFormatError

__all__ = ["SWF_FIELDS", "SwfTrace", "read_swf"]

SWF_FIELDS: tuple[str, ...] = (
    "job_id",
    "submit",
    "wait",
    "run",
    "alloc_procs",
    "avg_cpu",
    "used_mem",
    "req_procs",
    "req_time",
    "req_mem",
    "status",
    "user",
    "group",
    "executable",
    "queue",
    "partition",
    "preceding_job",
    "think_time",
)

SizeRule = Literal["allocated", "requested", "max"]


@dataclass(frozen=True)
class SwfTrace:
    """A parsed SWF file.

    Attributes:
        path: Where it came from.
        header: ``Key: value`` pairs of the header comments.
        jobs: One row per job, columns :data:`SWF_FIELDS` (float64; -1 where missing),
            plus ``line`` (1-based line number in the file).
    """

    path: str
    header: dict[str, str]
    jobs: pd.DataFrame

    @property
    def max_procs(self) -> int | None:
        """``MaxProcs`` (or ``MaxNodes``) from the header, if present."""
        for key in ("MaxProcs", "MaxNodes"):
            value = self.header.get(key, "").split()
            if value and value[0].isdigit():
                return int(value[0])
        return None

    def job_sizes(self, rule: SizeRule = "max") -> np.ndarray:
        """Processors per job: allocated, requested, or the larger (RLScheduler's rule).

        A missing value (-1) falls back to the other field; -1 remains where both are missing.
        """
        alloc = self.jobs["alloc_procs"].to_numpy()
        req = self.jobs["req_procs"].to_numpy()
        if rule == "allocated":
            sizes = np.where(alloc > 0, alloc, req)
        elif rule == "requested":
            sizes = np.where(req > 0, req, alloc)
        else:
            sizes = np.maximum(alloc, req)
        return np.asarray(sizes, dtype=np.float64)


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return path.open(encoding="utf-8", errors="replace")


def _data_lines(handle: IO[str]) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(handle, start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith(";"):
            yield number, stripped


def _read_header(path: Path) -> dict[str, str]:
    header: dict[str, str] = {}
    with _open_text(path) as handle:
        for line in handle:
            stripped = line.strip()
            if not stripped:
                continue
            if not stripped.startswith(";"):
                break
            key, sep, value = stripped.lstrip(";").partition(":")
            if sep and key.strip() and " " not in key.strip():
                header[key.strip()] = value.strip()
    return header


def _locate_error(path: Path) -> TraceFormatError:
    """Find the first malformed line, for a precise message."""
    with _open_text(path) as handle:
        for number, line in _data_lines(handle):
            fields = line.split()
            if len(fields) != len(SWF_FIELDS):
                return TraceFormatError(
                    str(path),
                    number,
                    "line",
                    f"expected {len(SWF_FIELDS)} fields, found {len(fields)}",
                )
            for name, text in zip(SWF_FIELDS, fields, strict=True):
                try:
                    value = float(text)
                except ValueError:
                    return TraceFormatError(str(path), number, name, f"{text!r} is not a number")
                if not math.isfinite(value):
                    return TraceFormatError(str(path), number, name, f"{text!r} is not finite")
                if value < 0 and value != -1 and name not in {"think_time"}:
                    return TraceFormatError(
                        str(path), number, name, f"{text} is negative (only -1, 'missing', is)"
                    )
    return TraceFormatError(str(path), 0, "line", "unreadable trace")


def read_swf(path: str | Path) -> SwfTrace:
    """Read an SWF trace (``.swf`` or ``.swf.gz``).

    Raises:
        FileNotFoundError: when the file does not exist.
        TraceFormatError: naming the line and field of the first malformed line: a wrong number
            of fields, a non-numeric value, or a negative value other than -1.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"trace file not found: {p}")
    header = _read_header(p)
    numbers: list[int] = []
    texts: list[str] = []
    with _open_text(p) as handle:
        for number, line in _data_lines(handle):
            numbers.append(number)
            texts.append(line)
    if not texts:
        raise TraceFormatError(str(p), 0, "line", "the trace has no job lines")
    try:
        frame = pd.read_csv(
            io.StringIO("\n".join(texts)),
            sep=r"\s+",
            header=None,
            names=list(SWF_FIELDS),
            dtype="float64",
            engine="c",
        )
    except (ValueError, pd.errors.ParserError) as e:
        raise _locate_error(p) from e
    values = frame.to_numpy()
    bad = ~np.isfinite(values) | ((values < 0) & (values != -1))
    bad[:, SWF_FIELDS.index("think_time")] &= ~np.isfinite(values[:, -1])
    if bad.any():
        raise _locate_error(p)
    frame["line"] = np.asarray(numbers, dtype=np.int64)
    return SwfTrace(path=str(p), header=header, jobs=frame)
