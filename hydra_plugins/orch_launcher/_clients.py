"""The launcher's two clients of a scheduler: an in-process daemon (:class:`EmbeddedScheduler`),
or a running one over its API (:class:`RemoteScheduler`); :func:`make_scheduler` picks one.

Both answer the same three questions (submit these jobs, which of them ended and how, cancel
one), so the launcher does not care where the scheduler lives.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launchers.local import LocalBackend
from orchestrator.daemon.client import DaemonClient, default_state_dir
from orchestrator.daemon.service import Daemon, DaemonConfig
from orchestrator.daemon.spec import JobSpec
from orchestrator.daemon.state_folder import lock_embedded_folder
from orchestrator.exceptions import InvalidRequestError
from orchestrator.resources.cluster import load_cluster
from orchestrator.scheduling.job import FINISHED_VALUES
from orchestrator.store import Store, sqlite_url

__all__ = ["EmbeddedScheduler", "Ended", "RemoteScheduler", "make_scheduler"]


@dataclass(frozen=True)
class Ended:
    """How a scheduler job ended."""

    state: str
    reason: str
    exit_code: int | None


class EmbeddedScheduler:
    """A :class:`Daemon` in this process, with the local backend, ticked while the sweep waits.

    Args:
        root: Its state folder (store ``orch.db``, job folders ``jobs/<id>/``); one sweep at a
            time may use it (a file lock says so).
        cluster: The cluster preset.
    """

    mode = "embedded"

    def __init__(self, root: Path, cluster: str) -> None:
        self.root = root
        self._lock_fd = lock_embedded_folder(
            root,
            f"another sweep's embedded scheduler uses {root}: give this sweep its own "
            "folder (hydra.launcher.scheduler.state_dir=...) or wait for it",
        )
        # alembic's migration log would flood the sweep's log (Hydra logs INFO to the console).
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.store = Store(sqlite_url(root / "orch.db"))
        self.backend = LocalBackend(root)
        # Short grace and a frequent pass: a sweep's jobs are short and the sweep is waiting.
        config = DaemonConfig(grace_s=5.0, reschedule_s=0.5, retry_backoff_s=0.5)
        self.daemon = Daemon(self.store, load_cluster(cluster), self.backend, config)
        self.daemon.recover()
        self.url = f"embedded:{root}"

    def submit(self, jobs: Sequence[Mapping[str, Any]]) -> list[int]:
        now = time.time()
        specs = [
            JobSpec.from_mapping(dict(j), prefix=f"jobs[{i}]." if len(jobs) > 1 else "", now=now)
            for i, j in enumerate(jobs)
        ]
        ids = [group[0] for group in self.daemon.submit(specs)]
        self.daemon.tick(time.time())
        return ids

    def ended(self, ids: Sequence[int]) -> dict[int, Ended]:
        self.daemon.tick(time.time())
        out: dict[int, Ended] = {}
        for job_id in ids:
            state = self.daemon.finished.get(job_id)
            if state is None or job_id in self.daemon.draining:
                continue
            row = self.store.get_job(job_id)
            out[job_id] = Ended(state.value, row["reason"], row["exit_code"])
        return out

    def pause_s(self, poll_s: float, n_waiting: int) -> float:
        return min(poll_s, self.daemon.next_wakeup(time.time()))

    def cancel(self, job_id: int) -> None:
        if job_id in self.daemon.waiting or job_id in self.daemon.active:
            self.daemon.cancel(job_id, "cancelled by the sweep")

    def stderr_path(self, job_id: int) -> Path:
        return self.backend.paths(job_id).stderr

    def close(self) -> None:
        """Stop what still runs (a sweep that is left leaves no orphans), close the store."""
        live = [*self.daemon.waiting, *self.daemon.active]
        for job_id in live:
            self.cancel(job_id)
        deadline = time.monotonic() + 15
        while (self.daemon.active or self.daemon.draining) and time.monotonic() < deadline:
            self.daemon.tick(time.time())
            time.sleep(0.05)
        self.store.close()
        os.close(self._lock_fd)


class RemoteScheduler:
    """A running ``orch daemon``, over its HTTP API.

    Args:
        url: Its URL; None: read from ``state_dir``.
        token: Its token; None: read from ``state_dir``.
        state_dir: Its state folder (None: ``$ORCH_STATE_DIR`` or ``~/.orch``).
    """

    mode = "daemon"

    def __init__(self, url: str | None, token: str | None, state_dir: str | None) -> None:
        self.root = Path(state_dir) if state_dir else default_state_dir()
        if url is None:
            self.client = DaemonClient.from_state_dir(self.root)
        else:
            self.client = DaemonClient(url, token)
        if token is not None:
            self.client.token = token
        self.url = self.client.url
        self._ended: dict[int, Ended] = {}
        self.client.health()  # fail now, with the daemon's address, rather than at submit

    def submit(self, jobs: Sequence[Mapping[str, Any]]) -> list[int]:
        return [group[0] for group in self.client.submit_batch(jobs)]

    def ended(self, ids: Sequence[int]) -> dict[int, Ended]:
        wanted = [i for i in ids if i not in self._ended]
        if wanted:
            for job_id in wanted:
                doc = self.client.job(job_id)
                if doc["state"] in FINISHED_VALUES:
                    self._ended[job_id] = Ended(doc["state"], doc["reason"], doc["exit_code"])
        return {i: self._ended[i] for i in ids if i in self._ended}

    def pause_s(self, poll_s: float, n_waiting: int) -> float:
        # One request per waiting job per poll: keep a big sweep from flooding the daemon.
        return max(poll_s, 0.2, 0.01 * n_waiting)

    def cancel(self, job_id: int) -> None:
        self.client.action(job_id, "cancel")

    def stderr_path(self, job_id: int) -> Path:
        return self.root / "jobs" / str(job_id) / "stderr"

    def close(self) -> None:
        self.client.close()


def make_scheduler(
    scheduler: Mapping[str, Any], cluster: str | None, embedded_root: Path
) -> EmbeddedScheduler | RemoteScheduler:
    """The scheduler named by ``hydra.launcher.scheduler``.

    Raises:
        InvalidRequestError: an unknown mode (names the field and the valid values).
        DaemonError: no daemon answers where one is expected.
    """
    mode = scheduler.get("mode", "embedded")
    if mode == "embedded":
        root = Path(scheduler["state_dir"]) if scheduler.get("state_dir") else embedded_root
        return EmbeddedScheduler(root.resolve(), cluster or "local")
    if mode == "daemon":
        return RemoteScheduler(
            scheduler.get("url"), scheduler.get("token"), scheduler.get("state_dir")
        )
    raise InvalidRequestError(
        "hydra.launcher.scheduler.mode", mode, "expected embedded or daemon", "embedded"
    )
