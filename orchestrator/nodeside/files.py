"""Atomic writes and process start times (standard library only, no pathlib: see the package)."""

from __future__ import annotations

import os

__all__ = ["atomic_write", "process_start_ticks"]


def atomic_write(path: str | os.PathLike[str], data: str | bytes, mode: int = 0o644) -> None:
    """Write ``path`` through a temporary file and a rename, so readers never see half of it."""
    folder, name = os.path.split(os.fspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def process_start_ticks(pid: int) -> int | None:
    """The start time of a live process in clock ticks since boot (None if gone or a zombie).

    Pid plus start time names a process uniquely across pid reuse.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])
