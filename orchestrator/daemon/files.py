"""The files of a daemon's state folder, and how a client finds a running daemon.

Standard library only (plus the pid/start-time probe), so the CLI starts fast.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchers.local import process_start_ticks
from orchestrator.exceptions import DaemonError

__all__ = ["DaemonFiles", "ensure_token", "read_daemon_info"]


@dataclass(frozen=True)
class DaemonFiles:
    """Where a daemon keeps its files."""

    root: Path

    @property
    def token(self) -> Path:
        return self.root / "token"

    @property
    def info(self) -> Path:
        return self.root / "daemon.json"

    @property
    def lock(self) -> Path:
        return self.root / "daemon.lock"

    @property
    def log(self) -> Path:
        return self.root / "daemon.log"

    @property
    def database(self) -> Path:
        return self.root / "orch.db"


def ensure_token(path: Path) -> str:
    """The API token in ``path``, created on first use readable by its owner only (0600).

    Raises:
        DaemonError: the file exists but others may read it.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise DaemonError(
                f"{path} has mode {mode:o}: others may read the token; run chmod 600 {path}"
            ) from None
        return path.read_text().strip()
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def read_daemon_info(root: Path) -> dict[str, Any] | None:
    """The running daemon's ``daemon.json``, or None when no live daemon owns ``root``."""
    try:
        info: dict[str, Any] = json.loads(DaemonFiles(root).info.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if process_start_ticks(int(info["pid"])) != info.get("start_ticks"):
        return None  # a stale file from a killed daemon
    return info
