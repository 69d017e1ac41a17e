"""Checkpoints written atomically, and the signals that ask for one (SIGTERM, SIGUSR1)."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import torch

__all__ = ["PreemptionFlag", "load_checkpoint", "save_checkpoint"]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then rename.

    A job killed while writing leaves the previous checkpoint intact, never a torn one.

    Args:
        path: Destination.
        state: Anything ``torch.save`` accepts.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (our own files: full unpickling)."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    assert isinstance(state, dict)
    return state


class PreemptionFlag:
    """Records SIGTERM / SIGUSR1 so the training loop can checkpoint at the next step boundary.

    Saving inside the handler would race with a half-done optimizer step; the loop polls
    :attr:`received` instead. Use as a context manager: previous handlers come back on exit.
    Outside the main thread (where Python forbids handlers) it installs nothing.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def __enter__(self) -> PreemptionFlag:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()
