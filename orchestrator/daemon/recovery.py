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

from orchestrator.backends.contract import Liveness, PollResult
from orchestrator.daemon.job_rows import request_of
from orchestrator.daemon.spec import parse_dependency
from orchestrator.daemon.table import LiveJob
from orchestrator.resources.topology import Block, NodeShare
from orchestrator.scheduling.job import JobState
from orchestrator.store.store import HeldShare

if TYPE_CHECKING:
    from orchestrator.daemon.service import Daemon

__all__ = ["live_job", "recover", "stop_with_requeue"]


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
    counts = {"waiting": 0, "reattached": 0, "aborted": 0, "ended": 0, "draining": 0, "leaked": 0}
    daemon.table.clear()
    held = {
        job_id: _block(daemon, rows)
        for job_id, rows in daemon.store.held_shares(daemon.cluster_id).items()
    }
    starting = _mirror_live_jobs(daemon, now, held, counts)
    leaked = _mirror_held_nodes(daemon, now, held, counts)
    # Memory equals the store from here on; the repairs below are ordinary changes.
    table = daemon.table
    for job_id, block in leaked:
        with table.change() as change:
            daemon.store.release(change.conn, job_id, now)
        table.release(block)
        counts["leaked"] += 1
    for job in starting:
        _settle_start(daemon, job, now, counts)
    table.dirty = True
    return counts


def _block(daemon: Daemon, rows: list[tuple[int, HeldShare | None]]) -> Block:
    """A stored allocation as a block (with what it holds of each node on a shared cluster)."""
    nodes = np.asarray([node for node, _ in rows], dtype=np.int64)
    pool = daemon.table.pool
    if pool is None:
        return Block(nodes=nodes)
    shares = tuple(
        NodeShare(*share) if share is not None else pool.whole(node) for node, share in rows
    )
    return Block(nodes=nodes, shares=shares)


def _hold(daemon: Daemon, job: LiveJob, block: Block | None) -> None:
    job.block = block if block is not None else Block(nodes=np.zeros(0, dtype=np.int64))
    daemon.table.hold(job.block)


def _mirror_live_jobs(
    daemon: Daemon, now: float, held: dict[int, Block], counts: dict[str, int]
) -> list[LiveJob]:
    """Waiting and active jobs into the table (their nodes taken out of ``held``); the jobs
    that were STARTING."""
    table = daemon.table
    starting: list[LiveJob] = []
    live = (JobState.PENDING, JobState.HELD, JobState.STARTING, JobState.RUNNING)
    for row in list(daemon.store.iter_live([s.value for s in live])):
        job = live_job(row)
        if job.state.is_waiting:
            table.wait(job)
            if job.not_before > now:
                daemon.next_retry = min(daemon.next_retry, job.not_before)
            if job.dependency:
                table.dependent.add(job.job_id)
            counts["waiting"] += 1
            continue
        _hold(daemon, job, held.pop(job.job_id, None))
        table.active[job.job_id] = job
        if job.state is JobState.STARTING:
            starting.append(job)
        else:
            counts["reattached"] += 1
    return starting


def _mirror_held_nodes(
    daemon: Daemon, now: float, held: dict[int, Block], counts: dict[str, int]
) -> list[tuple[int, Block]]:
    """Nodes still held by finished jobs: a job whose processes may live is drained again;
    the others are leaks (returned, to be released)."""
    table = daemon.table
    leaked: list[tuple[int, Block]] = []
    held_rows = {r["id"]: r for r in daemon.store.list_jobs(ids=list(held))}
    for job_id, block in held.items():
        held_row = held_rows.get(job_id)
        if held_row is not None and JobState(held_row["state"]).is_finished and held_row["handle"]:
            # Cancelled or timed out, processes perhaps still alive: drain again.
            drained = live_job(held_row)
            _hold(daemon, drained, block)
            drained.kill_at = now + daemon.config.grace_s
            table.draining[job_id] = drained
            daemon.backend.signal(held_row["handle"], signal.SIGTERM)
            counts["draining"] += 1
        else:
            table.hold(block)
            leaked.append((job_id, block))
    return leaked


def _settle_start(daemon: Daemon, job: LiveJob, now: float, counts: dict[str, int]) -> None:
    """Killed between allocating and recording the launch: make sure nothing of that attempt
    runs, now or later. An attempt whose every task had already ended is recorded as it ended
    (rerunning work that succeeded would be wrong); any other fails as NODE_FAIL (the retry
    policy may requeue it)."""
    backend = daemon.backend
    backend.abort_start(job.job_id, job.attempts)
    ended = backend.ended_attempt(job.job_id, job.attempts, job.ntasks)
    with daemon.table.change() as change:
        if ended is not None:
            # It did run: the event log says so before it says how it ended.
            change.move(job, JobState.RUNNING, "launched before the daemon restarted", now)
            new, reason, exit_code = daemon.outcome(job, ended)
            reason += " (recorded after a daemon restart)"
            counts["ended"] += 1
        else:
            new, exit_code = JobState.NODE_FAIL, None
            reason = "daemon restarted while starting it"
            counts["aborted"] += 1
        usage = ended.usage if ended is not None else ()
        daemon.end_attempt(change, job, new, reason, exit_code, now, usage)


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
            change.move(job, JobState.PREEMPTED, "daemon stopped (requeue)", now)
            change.move(job, JobState.PENDING, "requeued after preemption", now, handle=None)
        count += 1
    return count
