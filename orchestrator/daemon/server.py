"""Run a daemon process: state folder, token, lock, recovery, the tick loop and the API.

The state folder (0700, made or tightened at start; a folder of someone else's or one others may
write is refused) holds ``orch.db`` (the default SQLite store), ``token`` (made at first start),
``daemon.json`` (pid, start time and URL of the running daemon, written atomically once the API
listens), ``daemon.lock`` (one daemon per folder) and ``jobs/`` (the local backend's per-job
layout). The daemon's files are 0600, its folders 0700.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from orchestrator.backends import BaseBackend, make_backend
from orchestrator.daemon.access import Access, group_id
from orchestrator.daemon.api import ApiLimits
from orchestrator.daemon.listener import ApiServer
from orchestrator.daemon.service import Daemon, DaemonConfig
from orchestrator.daemon.state_folder import (
    DaemonFiles,
    ensure_token,
    exposure_warning,
    is_loopback,
    prepare_state_dir,
)
from orchestrator.exceptions import BackendError, DaemonError, StoreUnavailableError
from orchestrator.nodeside.files import atomic_write, process_start_ticks
from orchestrator.resources.cluster import Cluster
from orchestrator.store import Store, sqlite_url

__all__ = ["serve"]

log = logging.getLogger("orchestrator.daemon")


def serve(
    root: Path,
    cluster: Cluster,
    *,
    store_url: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    config: DaemonConfig | None = None,
    socket_path: Path | None = None,
    ready: threading.Event | None = None,
    stop: threading.Event | None = None,
    backend: str = "local",
    backend_options: Mapping[str, str] | None = None,
    expose: bool = False,
    allowed_hosts: Sequence[str] = (),
    shared_group: str | None = None,
    limits: ApiLimits | None = None,
) -> None:
    """Run a daemon until SIGTERM or SIGINT (or ``stop`` is set).

    Args:
        backend: The backend's name (:data:`orchestrator.backends.BACKENDS`).
        backend_options: Its ``--backend-opt`` pairs.
        expose: Allow a ``host`` that is not loopback (see :func:`exposure_warning`).
        allowed_hosts: Names accepted in the ``Host`` header besides the loopback ones, the
            bound address and IP addresses.
        shared_group: Shared mode (:mod:`.access`): this group may use the Unix socket, and
            users' own tokens (file ``users``) are accepted over TCP.
        limits: Connection, request, body and queue limits of the API.

    Raises:
        DaemonError: another daemon holds the state folder; the folder is another user's or
            others may write to it; a non-loopback ``host`` without ``expose``.
        InvalidRequestError: an unknown backend or backend option.
    """
    if socket_path is None and not is_loopback(host):
        if not expose:
            raise DaemonError(exposure_warning(host) + "; add --expose if that is what you want")
        log.warning("warning: %s", exposure_warning(host))
    files = DaemonFiles(root)
    lock_fd = _claim_state_folder(root, files)
    token = ensure_token(files.token)
    if store_url is None:
        # SQLite gives its -wal and -shm files the database's mode: all three are 0600.
        os.close(os.open(files.database, os.O_WRONLY | os.O_CREAT, 0o600))
    store = Store(store_url or sqlite_url(files.database))
    try:
        runner = _open_backend(backend, root, cluster, backend_options)
    except Exception:
        store.close()
        os.close(lock_fd)
        raise
    access = Access(
        token,
        users_file=files.users,
        shared_gid=group_id(shared_group) if shared_group is not None else None,
    )
    daemon = Daemon(store, cluster, runner, config)
    stop = stop or threading.Event()
    counts = _recover(daemon, stop)
    log.info("recovered: %s", counts)
    server = ApiServer(
        daemon,
        token,
        host,
        port,
        allowed_hosts,
        socket_path=socket_path,
        access=access,
        limits=limits,
    )
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    pid = os.getpid()
    info = {
        "pid": pid,
        "start_ticks": process_start_ticks(pid),
        "url": server.url,
        "store": store.url,
        "cluster": cluster.name,
        "backend": backend,
    }
    atomic_write(files.info, json.dumps(info), mode=0o600)
    api_thread = threading.Thread(target=server.serve_forever, name="api", daemon=True)
    api_thread.start()
    log.info("daemon %d serving %s on %s", pid, cluster.name, server.url)
    if ready is not None:
        ready.set()
    try:
        _tick_until(daemon, stop)
    finally:
        server.shutdown()
        server.server_close()
        requeued = daemon.stop()
        log.info("daemon %d stopped (%d jobs requeued)", pid, requeued)
        files.info.unlink(missing_ok=True)
        store.close()
        os.close(lock_fd)


def _open_backend(
    name: str, root: Path, cluster: Cluster, options: Mapping[str, str] | None
) -> BaseBackend:
    """The backend, its engine checked: a daemon whose engine does not answer refuses to start
    (it would keep every job PENDING, saying nothing).

    Raises:
        DaemonError: the engine cannot be reached.
        InvalidRequestError: an unknown backend or backend option.
    """
    backend = make_backend(name, root, cluster, options)
    try:
        backend.check()
    except BackendError as e:
        backend.close()
        raise DaemonError(f"the {name} backend cannot start: {e}") from e
    return backend


def _claim_state_folder(root: Path, files: DaemonFiles) -> int:
    """Tighten the state folder and lock it for this daemon; the lock's descriptor.

    Raises:
        DaemonError: another daemon holds it.
    """
    former = prepare_state_dir(root)
    if former is not None:
        log.warning("state folder %s tightened from mode %o to 700", root, former)
    lock_fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        raise DaemonError(f"another daemon already runs on {root} (see {files.info})") from None
    return lock_fd


def _tick_until(daemon: Daemon, stop: threading.Event) -> None:
    while not stop.is_set():
        daemon.wake.clear()
        now = time.time()
        try:
            daemon.tick(now)
        except Exception:
            # A broken tick must not take the API down; the next one retries.
            log.exception("tick failed")
        daemon.wake.wait(min(daemon.next_wakeup(time.time()), 1.0))


def _recover(daemon: Daemon, stop: threading.Event) -> dict[str, int]:
    """Recover, waiting for a store that refuses writes (a full disk) to take them again."""
    while True:
        try:
            return daemon.recover()
        except StoreUnavailableError:
            # Logged once by the job table; recovery resumes where it stood.
            if stop.wait(2.0):
                raise
