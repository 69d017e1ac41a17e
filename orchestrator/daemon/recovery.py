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
from orchestrator.daemon.table import LiveJob
from orchestrator.resources.topology import Block
from orchestrator.scheduling.job import JobState

if TYPE_CHECKING:
    from orchestrator.daemon.service import Daemon

__all__ = ["live_job", "recover", "stop_with_requeue"]

S = JobState


def live_job(row: dict[str, Any]) -> LiveJob:
    """The daemon's mirror of a stored job."""
    return LiveJob(
        job_id=int(row["id"]),
        request=request_of(row),
        state=JobState(row["state"]),
        array_id=row["array_id"],
        array_limit=row["array_limit"],
        # A job that started had its dependencies met: a retry must not wait on them again.
        dependency=(
            parse_dependency(row["dependency"])
            if row["dependency"] and JobState(row["state"]).is_waiting
            else ()
        ),
        max_retries=row["max_retries"],
        attempts=row["attempts"],
        not_before=row["not_before"],
        start_time=row["start_time"] if row["start_time"] is not None else math.nan,
        handle=row["handle"],
    )


def recover(daemon: Daemon, now: float) -> dict[str, int]:
    """Rebuild ``daemon``'s mirror from its store (see :meth:`Daemon.recover`).

    Memory is first rebuilt to equal the store (nothing is written); the repairs (aborted
    starts, drains, leaks) then go through the table like any change, so a store that refuses
    them leaves memory equal to the store, and calling this again resumes the work.
    """
    store, backend, table = daemon.store, daemon.backend, daemon.table
    counts = {"waiting": 0, "reattached": 0, "aborted": 0, "ended": 0, "draining": 0, "leaked": 0}
    table.clear()
    held = store.held_nodes(daemon.cluster_id)

    def hold(job: LiveJob, nodes: list[int]) -> None:
        job.block = Block(nodes=np.asarray(nodes, dtype=np.int64))
        table.free[nodes] = False

    starting: list[LiveJob] = []
    live_states = [s.value for s in (S.PENDING, S.HELD, S.STARTING, S.RUNNING)]
    for row in list(store.iter_live(live_states)):
        job = live_job(row)
        if job.state.is_waiting:
            table.wait(job)
            if job.not_before > now:
                daemon.next_retry = min(daemon.next_retry, job.not_before)
            if job.dependency:
                table.dependent.add(job.job_id)
            counts["waiting"] += 1
            continue
        hold(job, held.pop(job.job_id, []))
        table.active[job.job_id] = job
        if job.state is S.STARTING:
            starting.append(job)
        else:
            counts["reattached"] += 1
    leaked: list[tuple[int, list[int]]] = []
    held_rows = {r["id"]: r for r in store.list_jobs(ids=list(held))}
    for job_id, nodes in held.items():
        held_row = held_rows.get(job_id)
        if held_row is not None and JobState(held_row["state"]).is_finished and held_row["handle"]:
            # Cancelled or timed out, processes perhaps still alive: drain again.
            drained = live_job(held_row)
            hold(drained, nodes)
            drained.kill_at = now + daemon.config.grace_s
            table.draining[job_id] = drained
            backend.signal(held_row["handle"], signal.SIGTERM)
            counts["draining"] += 1
        else:
            table.free[nodes] = False
            leaked.append((job_id, nodes))
    # Memory equals the store from here on; the repairs below are ordinary changes.
    for job_id, nodes in leaked:
        with table.change() as change:
            store.release(change.conn, job_id, now)
        table.free[nodes] = True
        counts["leaked"] += 1
    for job in starting:
        # Killed between allocating and recording the launch: make sure nothing of that
        # attempt runs, now or later. An attempt whose every task had already ended is
        # recorded as it ended (rerunning work that succeeded would be wrong); any other
        # fails as NODE_FAIL (the retry policy may requeue it).
        backend.abort_start(job.job_id, job.attempts)
        ended = backend.ended_attempt(job.job_id, job.attempts, job.ntasks)
        with table.change() as change:
            if ended is not None:
                # It did run: the event log says so before it says how it ended.
                change.move(job, S.RUNNING, "launched before the daemon restarted", now)
                new, reason, exit_code = daemon.outcome(job, ended)
                reason += " (recorded after a daemon restart)"
                counts["ended"] += 1
            else:
                new, reason, exit_code = S.NODE_FAIL, "daemon restarted while starting it", None
                counts["aborted"] += 1
            daemon.end_attempt(change, job, new, reason, exit_code, now)
    table.dirty = True
    return counts


def stop_with_requeue(daemon: Daemon, now: float, timeout_s: float) -> int:
    """Terminate every running job, record it PREEMPTED and requeue it; returns how many."""
    backend, table = daemon.backend, daemon.table
    for job in table.active.values():
        if job.handle is not None:
            backend.signal(job.handle, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    alive = dict(table.active)
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
    for job in list(table.active.values()):
        with table.change() as change:
            change.move(job, S.PREEMPTED, "daemon stopped (requeue)", now)
            change.move(job, S.PENDING, "requeued after preemption", now, handle=None)
        count += 1
    return count
