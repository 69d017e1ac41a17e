"""Restart after a crash, and the graceful stop that requeues: the daemon's two edges of life.

:func:`recover` rebuilds a :class:`~orchestrator.daemon.service.Daemon`'s in-memory mirror from
the store alone, so it is correct whatever moment the previous process was killed at.
"""

from __future__ import annotations

import math
import signal
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from launchers._base import Liveness, PollResult
from orchestrator.daemon.rows import request_of
from orchestrator.daemon.spec import parse_dependency
from orchestrator.resources.topology import Block
from orchestrator.scheduling.job import JobState

if TYPE_CHECKING:
    from orchestrator.daemon.service import Daemon, LiveJob

__all__ = ["live_job", "recover", "stop_with_requeue"]

S = JobState


def live_job(row: dict[str, Any]) -> LiveJob:
    """The daemon's mirror of a stored job."""
    from orchestrator.daemon.service import LiveJob

    return LiveJob(
        job_id=int(row["id"]),
        request=request_of(row),
        state=JobState(row["state"]),
        array_id=row["array_id"],
        array_limit=row["array_limit"],
        dependency=parse_dependency(row["dependency"]) if row["dependency"] else (),
        max_retries=row["max_retries"],
        attempts=row["attempts"],
        not_before=row["not_before"],
        start_time=row["start_time"] if row["start_time"] is not None else math.nan,
        handle=row["handle"],
    )


def recover(daemon: Daemon, now: float) -> dict[str, int]:
    """Rebuild ``daemon``'s mirror from its store (see :meth:`Daemon.recover`)."""
    store, backend = daemon.store, daemon.backend
    counts = {"waiting": 0, "reattached": 0, "aborted": 0, "draining": 0, "leaked": 0}
    daemon.waiting.clear()
    daemon.active.clear()
    daemon.draining.clear()
    daemon.dependent.clear()
    daemon.free[:] = True
    held = store.held_nodes(daemon.cluster_id)
    live_states = [s.value for s in (S.PENDING, S.HELD, S.STARTING, S.RUNNING)]
    for row in list(store.iter_live(live_states)):
        job = live_job(row)
        if job.state.is_waiting:
            daemon.waiting[job.job_id] = job
            if job.not_before > now:
                daemon.next_retry = min(daemon.next_retry, job.not_before)
            if job.dependency:
                daemon.dependent.add(job.job_id)
            counts["waiting"] += 1
        elif job.state is S.STARTING:
            # Killed between allocating and recording the launch: make sure nothing of that
            # attempt runs, now or later, then fail it (the retry policy may requeue it).
            backend.abort_start(job.job_id, job.attempts)
            with store.write() as conn:
                store.release(conn, job.job_id, now)
                daemon.end_attempt(
                    conn, job, S.NODE_FAIL, "daemon restarted while starting it", now, None
                )
            counts["aborted"] += 1
        else:
            nodes = held.get(job.job_id, [])
            job.block = Block(nodes=np.asarray(nodes, dtype=np.int64))
            daemon.free[nodes] = False
            daemon.active[job.job_id] = job
            counts["reattached"] += 1
    held_rows = {r["id"]: r for r in store.list_jobs(ids=list(held))}
    for job_id, nodes in held.items():
        held_row = held_rows.get(job_id)
        if held_row is None or job_id in daemon.active:
            continue
        if JobState(held_row["state"]).is_finished and held_row["handle"]:
            # Cancelled or timed out, processes perhaps still alive: drain again.
            drained = live_job(held_row)
            drained.block = Block(nodes=np.asarray(nodes, dtype=np.int64))
            drained.kill_at = now + daemon.config.grace_s
            backend.signal(held_row["handle"], signal.SIGTERM)
            daemon.draining[job_id] = drained
            daemon.free[nodes] = False
            counts["draining"] += 1
        else:
            with store.write() as conn:
                store.release(conn, job_id, now)
            counts["leaked"] += 1
    return counts


def stop_with_requeue(daemon: Daemon, now: float, timeout_s: float) -> int:
    """Terminate every running job, record it PREEMPTED and requeue it; returns how many."""
    store, backend = daemon.store, daemon.backend
    for job in daemon.active.values():
        if job.handle is not None:
            backend.signal(job.handle, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    alive = dict(daemon.active)
    while alive and time.monotonic() < deadline:
        results = backend.poll({i: j.handle for i, j in alive.items() if j.handle is not None})
        gone = PollResult(Liveness.EXITED)
        alive = {
            i: j for i, j in alive.items() if results.get(i, gone).liveness is Liveness.RUNNING
        }
        time.sleep(0.05)
    for job in alive.values():
        if job.handle is not None:
            backend.signal(job.handle, signal.SIGKILL)
    count = 0
    for job_id, job in list(daemon.active.items()):
        with store.write() as conn:
            store.release(conn, job_id, now)
            store.transition(conn, job_id, job.state, S.PREEMPTED, "daemon stopped (requeue)", now)
            store.transition(
                conn, job_id, S.PREEMPTED, S.PENDING, "requeued after preemption", now, handle=None
            )
        del daemon.active[job_id]
        count += 1
    return count
