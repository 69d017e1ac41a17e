"""Event-driven simulator: replays a workload through the scheduler core on a virtual clock.

At every event time (arrivals, completions) the engine releases finished jobs, queues arrivals,
asks :class:`~orchestrator.scheduling.core.SchedulerCore` for decisions and applies them. The core
is the same code the daemon runs; only the clock and the backends differ.

Invariants are checked as the run goes and raise :class:`SimulationInvariantError`: no node is
ever held by two jobs, and no job starts before it was submitted.
"""

from __future__ import annotations

import bisect
import heapq
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orchestrator.exceptions import OrchestratorError
from orchestrator.resources.cluster import Cluster
from orchestrator.resources.request import JobRequest
from orchestrator.resources.topology import Block, FlatTopology
from orchestrator.scheduling.core import SchedulerCore
from orchestrator.scheduling.policies import (
    Backfill,
    BaseOrdering,
    MultifactorOrdering,
    make_ordering,
)
from orchestrator.simulate.metrics import SimulationMetrics, compute_metrics
from orchestrator.simulate.workload import SkippedJob, WorkloadJob

__all__ = ["SimulationInvariantError", "SimulationResult", "simulate"]

ProgressCallback = Callable[[int, int], None]


class SimulationInvariantError(OrchestratorError):
    """The scheduler produced an impossible schedule (a bug, never a user error)."""


class _SimJob:
    """Mutable per-job state of one run."""

    __slots__ = (
        "block",
        "end",
        "job_id",
        "killed",
        "request",
        "reserved_at",
        "run",
        "run_key",
        "start",
    )

    def __init__(self, job: WorkloadJob) -> None:
        self.job_id: int | str = job.job_id
        self.request: JobRequest = job.request
        self.run = job.run_time
        self.start = math.nan
        self.end = math.nan
        self.block: Block = _NO_BLOCK
        self.killed = False
        self.reserved_at = math.nan
        self.run_key: tuple[float, int] = (math.nan, 0)

    @property
    def start_time(self) -> float:
        return self.start


_NO_BLOCK = Block(nodes=np.empty(0, dtype=np.int64))


@dataclass
class SimulationResult:
    """Per-job records, summary metrics, and the jobs that could not be replayed."""

    jobs: pd.DataFrame
    metrics: SimulationMetrics
    skipped: list[SkippedJob] = field(default_factory=list)

    def summary(self) -> dict[str, float | int | str | None]:
        out = self.metrics.as_dict()
        out["skipped"] = len(self.skipped)
        return out


def simulate(
    cluster: Cluster,
    workload: Sequence[WorkloadJob],
    *,
    order: str | BaseOrdering = "fcfs",
    backfill: Backfill | str = Backfill.EASY,
    kill_at_walltime: bool = True,
    commit_head: bool = False,
    one_event_per_pass: bool = False,
    record_nodes: bool = False,
    skipped: Sequence[SkippedJob] = (),
    progress: ProgressCallback | None = None,
) -> SimulationResult:
    """Replay ``workload`` on ``cluster``, starting from an empty machine.

    Args:
        cluster: The machine.
        workload: Jobs sorted by submit time (see :mod:`orchestrator.simulate.workload`).
        order: An ordering name or instance.
        backfill: Backfilling mode.
        kill_at_walltime: End a job at its walltime if it would run longer (state ``killed``).
        commit_head: Keep a blocked head job first until it starts (see ``SchedulerCore``).
        one_event_per_pass: Take one event at a time, each followed by a scheduling pass: the
            next arrival when it comes no later than the next completion, else that completion
            (completions at the same time in the order their jobs started). By default every
            event of a time is taken before one pass. RLScheduler's environment steps this way,
            so jobs may be backfilled between two completions of the same second.
        record_nodes: Add a ``node_ids`` column (the nodes of each job) to the records.
        skipped: Jobs the workload conversion dropped; carried into the result.
        progress: Called as ``progress(done, total)`` every few hundred finished jobs.

    Returns:
        A :class:`SimulationResult`.
    """
    start_wall = time.perf_counter()
    ordering = order if isinstance(order, BaseOrdering) else make_ordering(order, cluster.size)
    core = SchedulerCore(cluster.topology, ordering, Backfill(backfill), commit_head=commit_head)
    jobs = [_SimJob(j) for j in workload]
    for job in jobs:
        cluster.check_request(job.request)
    jobs.sort(key=lambda j: j.request.submit_time)
    total = len(jobs)
    free = np.ones(cluster.size, dtype=bool)
    free_count = cluster.size
    flat = isinstance(cluster.topology, FlatTopology)
    # Static orderings are kept sorted incrementally (bisect); others are sorted by the core.
    incremental = not ordering.time_dependent
    pending: list[_SimJob] = []
    keys: list[tuple[float, float, int]] = []
    # Running jobs sorted by expected end (start + estimate), as the core's shadow search wants.
    running: list[_SimJob] = []
    running_keys: list[tuple[float, int]] = []
    ends: list[tuple[float, int, _SimJob]] = []
    seq = 0
    arrival = 0
    done = 0
    now = jobs[0].request.submit_time if jobs else 0.0
    fragmented_node_seconds = 0.0
    fragmented_now = 0
    report_every = max(1, total // 200)
    head: int | str | None = None
    ledger = ordering.ledger if isinstance(ordering, MultifactorOrdering) else None

    while arrival < total or ends:
        next_time = min(
            jobs[arrival].request.submit_time if arrival < total else math.inf,
            ends[0][0] if ends else math.inf,
        )
        fragmented_node_seconds += fragmented_now * (next_time - now)
        now = next_time
        # One event at a time: an arrival at this time goes before any completion.
        single_arrival = one_event_per_pass and (
            arrival < total and jobs[arrival].request.submit_time <= now
        )
        while ends and ends[0][0] <= now and not single_arrival:
            _, _, job = heapq.heappop(ends)
            free[job.block.nodes] = True
            free_count += job.block.size
            i = bisect.bisect_left(running_keys, job.run_key)
            del running_keys[i], running[i]
            if ledger is not None:
                ledger.charge(job.request.user, job.block.size * (job.end - job.start), now)
            done += 1
            if progress is not None and done % report_every == 0:
                progress(done, total)
            if one_event_per_pass:
                break
        while arrival < total and jobs[arrival].request.submit_time <= now:
            job = jobs[arrival]
            if incremental:
                key = (ordering.score(job.request, now), job.request.submit_time, arrival)
                i = bisect.bisect(keys, key)
                keys.insert(i, key)
                pending.insert(i, job)
            else:
                pending.append(job)
            arrival += 1
            if one_event_per_pass:
                break
        if not pending:
            fragmented_now = 0
            continue
        # A flat cluster with no free node cannot start anything: skip the pass, unless a head
        # is to be committed (with commit_head the first job in order is chosen now, even when
        # it cannot start).
        if flat and free_count == 0 and not commit_head:
            continue
        decisions = core.schedule(
            now,
            pending,
            running,
            free,
            presorted=True,
            running_sorted=True,
            committed_head=head,
        )
        head = decisions.head
        for reservation in decisions.reservations:
            job_r = _find(pending, reservation.job_id)
            if job_r is not None and math.isnan(job_r.reserved_at):
                job_r.reserved_at = reservation.start_time
        if decisions.starts:
            started = set()
            for start in decisions.starts:
                found = _find(pending, start.job_id)
                if found is None:
                    raise SimulationInvariantError(f"core started unknown job {start.job_id}")
                job = found
                nodes = start.block.nodes
                if nodes.size != job.request.node_count and not _rounded_up(job, start.block):
                    raise SimulationInvariantError(
                        f"job {job.job_id} asked {job.request.node_count} nodes, got {nodes.size}"
                    )
                if not free[nodes].all():
                    raise SimulationInvariantError(
                        f"job {job.job_id} given nodes that are already held at t={now}"
                    )
                if now < job.request.submit_time:
                    raise SimulationInvariantError(f"job {job.job_id} starts before its submit")
                free[nodes] = False
                free_count -= nodes.size
                job.start = now
                job.block = start.block
                limit = job.request.walltime_s
                duration = job.run
                if kill_at_walltime and limit is not None and duration > limit:
                    duration, job.killed = limit, True
                job.end = now + duration
                job.run_key = (now + job.request.estimate, seq)
                i = bisect.bisect(running_keys, job.run_key)
                running_keys.insert(i, job.run_key)
                running.insert(i, job)
                heapq.heappush(ends, (job.end, seq, job))
                seq += 1
                started.add(job.job_id)
            kept = [i for i, j in enumerate(pending) if j.job_id not in started]
            pending = [pending[i] for i in kept]
            if incremental:
                keys = [keys[i] for i in kept]
        fragmented_now = 0
        if decisions.head is not None and not flat:
            head_job = _find(pending, decisions.head)
            if head_job is not None and free_count >= head_job.request.node_count:
                fragmented_now = free_count
    if pending:
        raise SimulationInvariantError(f"{len(pending)} jobs never started")
    if progress is not None:
        progress(total, total)
    frame = _records(jobs)
    if record_nodes:
        frame["node_ids"] = [tuple(j.block.nodes.tolist()) for j in jobs]
    metrics = compute_metrics(
        frame,
        cluster.size,
        wall_s=time.perf_counter() - start_wall,
        fragmented_node_seconds=None if flat else fragmented_node_seconds,
    )
    return SimulationResult(frame, metrics, list(skipped))


def _find(pending: list[_SimJob], job_id: int | str) -> _SimJob | None:
    # Decisions name jobs near the head of the queue; a linear scan from the front is short.
    for job in pending:
        if job.job_id == job_id:
            return job
    return None


def _rounded_up(job: _SimJob, block: Block) -> bool:
    """A ``:torus`` shape may be rounded up to whole allocation units."""
    shape = job.request.shape
    return shape is not None and block.size >= job.request.node_count


def _records(jobs: Sequence[_SimJob]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "job_id": [j.job_id for j in jobs],
            "user": [j.request.user for j in jobs],
            "submit": [j.request.submit_time for j in jobs],
            "start": [j.start for j in jobs],
            "end": [j.end for j in jobs],
            "nodes": [j.block.size for j in jobs],
            "requested_nodes": [j.request.node_count for j in jobs],
            "run": [j.end - j.start for j in jobs],
            "trace_run": [j.run for j in jobs],
            "estimate": [j.request.estimate for j in jobs],
            "killed": [j.killed for j in jobs],
            "reserved_at": [j.reserved_at for j in jobs],
            "block": [j.block.describe() if j.block.origin is not None else "" for j in jobs],
        }
    )
    frame["wait"] = frame["start"] - frame["submit"]
    frame["bsld"] = np.maximum((frame["wait"] + frame["run"]) / np.maximum(frame["run"], 10.0), 1.0)
    return frame
