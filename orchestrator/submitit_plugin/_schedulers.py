"""Where a submitit job goes: a running ``orch daemon`` over its API (:class:`RemoteScheduler`), or
a daemon embedded in this process (:class:`EmbeddedScheduler`), with the local backend and a
thread that ticks it; :func:`scheduler_for` picks one.

An embedded scheduler lives as long as the script that submitted: when the script ends (an
``atexit`` handler, or :func:`shutdown`) it **waits** for the jobs it still has, saying so on
stderr (Ctrl-C cancels them), or, with ``on_exit="cancel"``, cancels them at once with a
warning. Either way no job runs on unsupervised: nothing would ever record how it ended.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from orchestrator.daemon.client import DaemonClient
    from orchestrator.daemon.service import Daemon
    from orchestrator.store import Store

__all__ = ["EmbeddedScheduler", "RemoteScheduler", "Scheduler", "scheduler_for", "shutdown"]

log = logging.getLogger("orchestrator.submitit")

#: Our end states (``orchestrator.scheduling.job.FINISHED_VALUES``, without importing it here).
FINISHED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"})


class Scheduler(Protocol):
    """What the executor and its jobs ask of a scheduler."""

    key: str
    poll_s: float
    """How often a waiting job asks."""

    def submit(self, jobs: Sequence[Mapping[str, Any]]) -> list[int]: ...

    def states(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]: ...

    def cancel(self, job_id: int) -> None: ...


class EmbeddedScheduler:
    """A :class:`~orchestrator.daemon.service.Daemon` in this process, with the local backend,
    ticked by a thread of its own.

    Args:
        root: Its state folder (store ``orch.db``, job folders ``jobs/<id>/``); one process at a
            time may use it (a file lock says so).
        cluster: The cluster preset (``local``: four process-nodes on this machine).
        on_exit: What the end of the script does to jobs not ended: ``wait`` or ``cancel``.
    """

    poll_s = 0.05

    def __init__(self, root: Path, cluster: str, on_exit: str = "wait") -> None:
        from orchestrator.backends import make_backend
        from orchestrator.daemon.service import Daemon, DaemonConfig
        from orchestrator.daemon.state_folder import lock_embedded_folder
        from orchestrator.exceptions import InvalidRequestError
        from orchestrator.resources.cluster import load_cluster
        from orchestrator.store import Store, sqlite_url

        if on_exit not in ("wait", "cancel"):
            raise InvalidRequestError("on_exit", on_exit, "expected wait or cancel", "wait")
        self.root = root
        self.key = f"embedded:{root}"
        self.cluster = cluster
        self.on_exit = on_exit
        self._lock_fd = lock_embedded_folder(
            root,
            f"another process's embedded scheduler uses {root}: give this executor another "
            "folder (or state_dir), wait for it, or start a daemon (orch daemon start)",
        )
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.store: Store = Store(sqlite_url(root / "orch.db"))
        pool = load_cluster(cluster)
        self.backend = make_backend("local", root, pool)
        # Short grace and a frequent pass: the submitter is often waiting for the result.
        config = DaemonConfig(grace_s=5.0, reschedule_s=0.5, retry_backoff_s=0.5)
        self.daemon: Daemon = Daemon(self.store, pool, self.backend, config)
        self.daemon.recover()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick_loop, name="orch-embedded", daemon=True)
        self._thread.start()
        self.closed = False

    def _tick_loop(self) -> None:
        daemon = self.daemon
        while not self._stop.is_set():
            daemon.wake.clear()
            try:
                daemon.tick(time.time())
            except Exception:
                log.exception("tick failed")
            daemon.wake.wait(min(daemon.next_wakeup(time.time()), 0.2))

    def submit(self, jobs: Sequence[Mapping[str, Any]]) -> list[int]:
        from orchestrator.daemon.spec import JobSpec

        now = time.time()
        specs = [
            JobSpec.from_mapping(dict(j), prefix=f"jobs[{i}]." if len(jobs) > 1 else "", now=now)
            for i, j in enumerate(jobs)
        ]
        return [group[0] for group in self.daemon.submit(specs)]

    def states(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        daemon = self.daemon
        for job_id in ids:
            with daemon.lock:
                live = daemon.table.get(job_id)
                state = live.state.value if live is not None else None
            if state is None:
                row = self.store.get_job(job_id)
                out[job_id] = _info(row["state"], row["reason"], row["exit_code"])
            else:
                out[job_id] = _info(state, "", None)
        return out

    def cancel(self, job_id: int) -> None:
        with self.daemon.lock:
            live = self.daemon.table.get(job_id) is not None
            if live:
                self.daemon.cancel(job_id, "cancelled by submitit")

    def unfinished(self) -> list[int]:
        with self.daemon.lock:
            return [*self.daemon.waiting, *self.daemon.active]

    def finish(self, wait: bool | None = None) -> None:
        """The end of the script: wait for the jobs not ended (or cancel them), then close."""
        if self.closed:
            return
        wait = self.on_exit == "wait" if wait is None else wait
        deadline = time.monotonic() + 2.0
        while (live := self.unfinished()) and wait and time.monotonic() < deadline:
            time.sleep(0.05)  # jobs whose results are in but whose processes are still exiting
        if live and wait:
            print(
                f"orch: waiting for {len(live)} job(s) of the embedded scheduler in {self.root} "
                f"(ids {', '.join(map(str, live[:10]))}{', ...' if len(live) > 10 else ''}); "
                "Ctrl-C cancels them",
                file=sys.stderr,
                flush=True,
            )
            try:
                while self.unfinished():
                    time.sleep(0.1)
            except KeyboardInterrupt:
                live = self.unfinished()
                warnings.warn(f"orch: cancelling job(s) {live}", RuntimeWarning, stacklevel=2)
        elif live:
            warnings.warn(
                f"orch: the script ends: cancelling {len(live)} job(s) of its embedded "
                f"scheduler in {self.root} (ids {live}); on_exit='wait' waits for them instead",
                RuntimeWarning,
                stacklevel=2,
            )
        self.close()

    def close(self) -> None:
        """Cancel what still runs, let it drain (up to 15 s), stop the thread, close the store."""
        if self.closed:
            return
        for job_id in self.unfinished():
            self.cancel(job_id)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with self.daemon.lock:
                busy = bool(self.daemon.active or self.daemon.draining)
            if not busy:
                break
            time.sleep(0.05)
        self._stop.set()
        self.daemon.wake.set()
        self._thread.join(timeout=5)
        self.closed = True
        self.backend.close()
        self.store.close()
        os.close(self._lock_fd)
        _EMBEDDED.pop(self.root, None)


class RemoteScheduler:
    """A running ``orch daemon`` over its HTTP API (its state folder says where it listens)."""

    poll_s = 0.5

    def __init__(self, client: DaemonClient, root: Path) -> None:
        self.client = client
        self.root = root
        self.key = f"daemon:{root}"

    def submit(self, jobs: Sequence[Mapping[str, Any]]) -> list[int]:
        return [group[0] for group in self.client.submit_batch(jobs)]

    def states(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for job_id in ids:
            doc = self.client.job(job_id)
            out[job_id] = _info(doc["state"], doc.get("reason") or "", doc.get("exit_code"))
        return out

    def cancel(self, job_id: int) -> None:
        from orchestrator.daemon.client import ApiError

        try:
            self.client.action(job_id, "cancel")
        except ApiError as e:
            if e.status != 409:  # 409: it has already ended
                raise


def _info(state: str, reason: str, exit_code: int | None) -> dict[str, Any]:
    return {"State": state, "Reason": reason, "ExitCode": exit_code}


_EMBEDDED: dict[Path, EmbeddedScheduler] = {}
_REMOTE: dict[Path, RemoteScheduler] = {}
_LOCK = threading.Lock()


def scheduler_for(
    mode: str, state_dir: str | os.PathLike[str] | None, folder: Path, cluster: str, on_exit: str
) -> EmbeddedScheduler | RemoteScheduler:
    """The scheduler an executor submits to (one per state folder in this process).

    ``mode``: ``daemon`` (the daemon running on ``state_dir``, else ``$ORCH_STATE_DIR`` or
    ``~/.orch``; an error when none answers), ``embedded`` (in this process, on ``state_dir``
    or ``FOLDER/.orch``), ``auto`` (``daemon`` when one answers there, else ``embedded``).

    Raises:
        DaemonError: ``daemon`` mode and no daemon answers; or another process's embedded
            scheduler holds the folder.
        InvalidRequestError: an unknown mode.
    """
    from orchestrator.daemon.client import DaemonClient, default_state_dir
    from orchestrator.exceptions import DaemonError, InvalidRequestError

    if mode not in ("auto", "daemon", "embedded"):
        raise InvalidRequestError("mode", mode, "expected auto, daemon or embedded", "auto")
    with _LOCK:
        if mode != "embedded":
            root = Path(state_dir).expanduser().resolve() if state_dir else default_state_dir()
            if root in _REMOTE:
                return _REMOTE[root]
            try:
                client = DaemonClient.from_state_dir(root)
                client.health()
            except DaemonError:
                if mode == "daemon":
                    raise
            else:
                _REMOTE[root] = RemoteScheduler(client, root)
                return _REMOTE[root]
        root = (Path(state_dir).expanduser() if state_dir else folder / ".orch").resolve()
        found = _EMBEDDED.get(root)
        if found is None or found.closed:
            found = _EMBEDDED[root] = EmbeddedScheduler(root, cluster, on_exit)
        return found


def lookup(key: str) -> EmbeddedScheduler | RemoteScheduler | None:
    """The scheduler of this process with this ``key`` (a job unpickled here finds its own)."""
    kind, _, where = key.partition(":")
    root = Path(where)
    if kind == "embedded":
        found = _EMBEDDED.get(root)
        return found if found is not None and not found.closed else None
    if root not in _REMOTE:
        try:
            return scheduler_for("daemon", root, root, "local", "wait")
        except Exception:
            return None
    return _REMOTE[root]


def shutdown(wait: bool | None = None) -> None:
    """End this process's embedded schedulers now, as the end of the script would: wait for
    their jobs (``wait``; default: each one's ``on_exit``) or cancel them, then close."""
    for scheduler in list(_EMBEDDED.values()):
        scheduler.finish(wait)
    for remote in list(_REMOTE.values()):
        remote.client.close()
    _REMOTE.clear()


atexit.register(shutdown)
