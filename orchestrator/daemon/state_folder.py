"""The files of a daemon's state folder, and how a client finds a running daemon.

Standard library only (plus the pid/start-time probe), so the CLI starts fast.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.exceptions import DaemonError
from orchestrator.nodeside.files import process_start_ticks

__all__ = [
    "DaemonFiles",
    "ensure_token",
    "exposure_warning",
    "is_loopback",
    "lock_embedded_folder",
    "prepare_state_dir",
    "read_daemon_info",
]


@dataclass(frozen=True)
class DaemonFiles:
    """Where a daemon keeps its files."""

    root: Path

    @property
    def token(self) -> Path:
        return self.root / "token"

    @property
    def users(self) -> Path:
        """Shared mode's per-user token digests (``orch daemon add-user``)."""
        return self.root / "users"

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

    @property
    def owner_only(self) -> tuple[Path, ...]:
        """The daemon's own files, all of them 0600 (the SQLite sidecars follow the database)."""
        db = self.database
        wal, shm = db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")
        return (self.token, self.users, self.info, self.lock, self.log, db, wal, shm)


def prepare_state_dir(root: Path) -> int | None:
    """Make the state folder, or check and tighten an existing one: it holds the token, the job
    store (every job's command and environment) and the jobs' output.

    A new folder is made 0700. An existing one must be the caller's and writable by the caller
    alone (someone else could have planted files in it); then it is tightened to 0700 and the
    daemon's files in it (:attr:`DaemonFiles.owner_only`) to 0600.

    Returns:
        The folder's former mode if it was tightened, else None.

    Raises:
        DaemonError: ``root`` is not a folder, is another user's, or others may write to it.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        root.mkdir(mode=0o700, exist_ok=True)
    except FileExistsError:  # a file of that name
        raise DaemonError(
            f"state folder {root} is not a folder: give another --state-dir"
        ) from None
    info = root.stat()
    if not stat.S_ISDIR(info.st_mode):
        raise DaemonError(f"state folder {root} is not a folder: give another --state-dir")
    uid = os.geteuid()
    if info.st_uid != uid:
        raise DaemonError(
            f"state folder {root} is owned by uid {info.st_uid}, not by you (uid {uid}): the "
            "daemon keeps its token, the job store and the jobs' output there; use a folder of "
            "your own (--state-dir or ORCH_STATE_DIR)"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise DaemonError(
            f"state folder {root} is writable by group or others (mode {mode:o}): someone else "
            f"may have planted files in it; check its contents, then run chmod 700 {root}"
        )
    if mode != 0o700:
        os.chmod(root, 0o700)
    for path in DaemonFiles(root).owner_only:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_uid == uid and st.st_mode & 0o077:
            os.chmod(path, 0o600)
    return mode if mode != 0o700 else None


def lock_embedded_folder(root: Path, busy: str) -> int:
    """Make ``root`` and take its embedded scheduler's lock (``embedded.lock``): one process's
    in-process daemon at a time. Returns the lock's descriptor (closing it releases the lock).

    Raises:
        DaemonError: ``busy``, when another process holds the lock.
    """
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / "embedded.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DaemonError(busy) from None
    return fd


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        import ipaddress  # here: the job commands never check an address

        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str) -> str:
    """What binding the API to a non-loopback ``host`` exposes (said at start with --expose,
    refused without it)."""
    return (
        f"--host {host} is not a loopback address: the API and the status page are reachable "
        "from the network, where anyone who reaches the port reads the job list (names, users, "
        "commands), the allocation and the status page; job output and every change need the "
        "token, which travels in clear over plain HTTP (prefer --socket, or an SSH tunnel to "
        "127.0.0.1)"
    )


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
    import secrets  # here: only the daemon makes a token

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
