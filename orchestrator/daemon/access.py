"""Who is asking: the caller an API request is made by, and what that caller may do.

Two modes (docs/daemon.md, "Who may do what"):

* **Single owner** (the default): the token (a file only the daemon's owner can read) and the
  0600 socket admit the owner only. Every job is filed under the owner's login name, whatever
  the request's ``user`` field says.
* **Shared** (``--shared-group GROUP``): a group sharing one allocation. On the Unix socket
  (mode 0660, group GROUP) the kernel says who connected (``SO_PEERCRED``, as munge vouches for
  Slurm's users), so members of the group need no token; over TCP each user has a token of
  their own (``orch daemon add-user NAME``). A user's jobs are filed under their name; they may
  cancel, hold, release and read the output of their own jobs only. The owner (and root) may act
  on every job. Jobs still run as the daemon's owner: the group shares one account's allocation.

Reads that show no job output (the queue, a job's document, the allocation, health, metrics, the
status page) stay open to whoever reaches the daemon, as ``squeue`` is.
"""

from __future__ import annotations

import grp
import hashlib
import hmac
import os
import pwd
import secrets
from dataclasses import dataclass
from pathlib import Path

from orchestrator.daemon.spec import login_name
from orchestrator.exceptions import DaemonError, InvalidRequestError
from orchestrator.nodeside.files import atomic_write

__all__ = ["Access", "Caller", "add_user_token", "group_id", "user_name"]

_USER_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


@dataclass(frozen=True)
class Caller:
    """An authenticated caller.

    Attributes:
        name: The login name the caller's jobs are filed under.
        is_owner: The daemon's owner (or root): may act on every job.
    """

    name: str
    is_owner: bool

    def may_touch(self, job_user: str) -> bool:
        """Whether this caller may change or read the output of a job filed under ``job_user``."""
        return self.is_owner or job_user == self.name


def user_name(uid: int) -> str:
    """The login name of ``uid`` (the number itself when it has no passwd entry)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Access:
    """Authenticates callers from a bearer token or, in shared mode, the socket's peer.

    Args:
        owner_token: The daemon's token (file ``token`` in the state folder).
        users_file: Shared mode's per-user tokens (file ``users``: one ``NAME SHA256`` line per
            user; only digests are kept, so reading the file gives no token away). Read again
            when it changes, so ``orch daemon add-user`` takes effect without a restart.
        shared_gid: The group of shared mode; None: single owner.
    """

    def __init__(
        self, owner_token: str, users_file: Path | None = None, shared_gid: int | None = None
    ) -> None:
        self.owner = Caller(login_name(), True)
        self._owner_token = owner_token.encode()
        self.users_file = users_file
        self.shared_gid = shared_gid
        self._users: dict[str, str] = {}  # digest -> name
        self._users_stamp: tuple[int, int] | None = None

    @property
    def shared(self) -> bool:
        return self.shared_gid is not None

    def from_token(self, token: str) -> Caller | None:
        """The caller a bearer token stands for; None: no such token."""
        if hmac.compare_digest(token.encode(), self._owner_token):
            return self.owner
        if not self.shared or not token:
            return None
        digest = _digest(token)
        for known, name in self._user_tokens().items():
            if hmac.compare_digest(known, digest):
                return Caller(name, False)
        return None

    def from_peer(self, uid: int, gid: int) -> Caller | None:
        """The caller the kernel says connected to the Unix socket (shared mode only); None: not
        admitted that way (the token is then needed)."""
        if uid in (0, os.getuid()):
            return self.owner
        if self.shared_gid is None:
            return None
        name = user_name(uid)
        if gid == self.shared_gid or name in _members(self.shared_gid):
            return Caller(name, False)
        return None

    def _user_tokens(self) -> dict[str, str]:
        if self.users_file is None:
            return {}
        try:
            info = self.users_file.stat()
        except FileNotFoundError:
            self._users, self._users_stamp = {}, None
            return self._users
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._users_stamp:
            users: dict[str, str] = {}
            for line in self.users_file.read_text().splitlines():
                name, _, digest = line.strip().partition(" ")
                if name and digest:
                    users[digest] = name
            self._users, self._users_stamp = users, stamp
        return self._users


def _members(gid: int) -> frozenset[str]:
    try:
        group = grp.getgrgid(gid)
    except KeyError:
        return frozenset()
    primary = {p.pw_name for p in pwd.getpwall() if p.pw_gid == gid}
    return frozenset(group.gr_mem) | primary


def group_id(name: str) -> int:
    """The id of group ``name`` (a number is taken as an id).

    Raises:
        DaemonError: no such group.
    """
    if name.isascii() and name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise DaemonError(f"--shared-group {name!r}: no such group (see getent group)") from None


def add_user_token(users_file: Path, name: str) -> str:
    """Give ``name`` a new token (replacing theirs) and return it; only its digest is kept.

    Raises:
        InvalidRequestError: ``name`` is not a plausible login name.
    """
    if not name or len(name) > 64 or not set(name) <= _USER_NAME_CHARS:
        raise InvalidRequestError("user", name, "expected a login name", "alice")
    token = secrets.token_urlsafe(32)
    lines = []
    if users_file.exists():
        lines = [
            line
            for line in users_file.read_text().splitlines()
            if line.partition(" ")[0] != name and line.strip()
        ]
    lines.append(f"{name} {_digest(token)}")
    atomic_write(users_file, "\n".join(lines) + "\n", mode=0o600)
    return token
