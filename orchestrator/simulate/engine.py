"""Event-driven simulator: replays a workload through the scheduler core on a virtual clock.

At every event time (arrivals, completions) the engine releases finished jobs, queues arrivals,
asks :class:`~orchestrator.scheduling.core.SchedulerCore` for decisions and applies them. The core
is the same code the daemon runs; only the clock and the backends differ.

:class:`Simulation` holds one run and advances it an event time at a time (:meth:`~Simulation.step`)
or to the end (:meth:`~Simulation.run`), so a test, a notebook or a policy search can look at the
queue and the running jobs between steps; :func:`simulate` runs one to the end.

Invariants are checked as the run goes and raise :class:`SimulationInvariantError`: no node is
ever held by two jobs, and no job starts before it was submitted.
"""

from __future__ import annotations

import bisect
import heapq
import math
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orchestrator.exceptions import OrchestratorError
from orchestrator.resources.allocator import BoolArray
from orchestrator.resources.cluster import Cluster
from orchestrator.resources.request import JobRequest
from orchestrator.resources.shares import FreeShares, NodePool
from orchestrator.resources.topology import Block, FlatTopology
from orchestrator.scheduling.core import SchedulerCore, Start
from orchestrator.scheduling.policies import (
    Backfill,
    BaseOrdering,
    MultifactorOrdering,
    make_ordering,
)
from orchestrator.simulate.metrics import SimulationMetrics, compute_metrics
from orchestrator.simulate.workload import SkippedJob, WorkloadJob

__all__ = [
    "SimJob",
    "Simulation",
    "SimulationInvariantError",
    "SimulationNotFinishedError",
    "SimulationResult",
    "Step",
    "simulate",
]

ProgressCallback = Callable[[int, int], None]


class SimulationInvariantError(OrchestratorError):
    """The scheduler produced an impossible schedule (a bug, never a user error)."""


class SimulationNotFinishedError(OrchestratorError, RuntimeError):
    """:meth:`Simulation.result` was asked for while events were left to replay."""


_NO_BLOCK = Block(nodes=np.empty(0, dtype=np.int64))


class SimJob:
    """One job's state in a run: read it, do not change it.

    Attributes:
        job_id: The workload's id.
        request: What the job asks for (its ``submit_time``, ``estimate``, nodes, ...).
        run: The run time the workload gives (the job may be killed earlier at its walltime).
        start: When it started (NaN while it waits).
        end: When it ends or ended (NaN while it waits).
        block: The nodes it holds (an empty block while it waits).
        killed: It ends at its walltime, before its run time.
        reserved_at: The first reservation the scheduler made for it (NaN if none).
        expected_end: Start + estimate once started: what the scheduler expects.
        score: The ordering's score at arrival (static orderings only; NaN otherwise).
    """

    __slots__ = (
        "block",
        "end",
        "expected_end",
        "job_id",
        "killed",
        "request",
        "reserved_at",
        "run",
        "score",
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
        # The sort keys of the queue (static orderings) and of the running jobs. Jobs of equal
        # keys keep the order they came in (insort to the right): arrival order in the queue
        # (so submit order), start order among the running jobs.
        self.score = math.nan
        self.expected_end = math.nan

    @property
    def start_time(self) -> float:
        return self.start

    def __repr__(self) -> str:
        return f"SimJob({self.job_id!r}, start={self.start}, end={self.end})"


_SCORE = operator.attrgetter("score")
_EXPECTED_END = operator.attrgetter("expected_end")


@dataclass(frozen=True, slots=True)
class Step:
    """What one :meth:`Simulation.step` did at ``time``, by job id, in the order it happened.

    ``started`` is empty when no scheduling pass ran (nothing waiting, or no free node on a flat
    cluster).
    """

    time: float
    finished: tuple[int | str, ...]
    arrived: tuple[int | str, ...]
    started: tuple[int | str, ...]


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


class Simulation:
    """One replay of ``workload`` on ``cluster`` from an empty machine, advanced step by step.

    Each :meth:`step` takes the next event time: it releases the jobs that end then, queues the
    jobs that arrive then, and runs one scheduling pass (with ``one_event_per_pass``, one event
    per step instead). :meth:`run` steps to the end; :meth:`result` gives what :func:`simulate`
    returns. Between steps :attr:`now`, :attr:`queue`, :attr:`running` and :attr:`free_nodes`
    show the state; the :class:`SimJob` objects they hold are the run's own: read them only.

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

    ``metrics.wall_s`` of the result counts from construction to :meth:`result`, so it includes
    whatever the caller did between steps.
    """

    def __init__(
        self,
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
    ) -> None:
        self._start_wall = time.perf_counter()
        ordering = order if isinstance(order, BaseOrdering) else make_ordering(order, cluster.size)
        self._ordering = ordering
        self._core = SchedulerCore(
            cluster.topology, ordering, Backfill(backfill), commit_head=commit_head
        )
        jobs = [SimJob(j) for j in workload]
        for job in jobs:
            cluster.check_request(job.request)
        jobs.sort(key=lambda j: j.request.submit_time)
        self._cluster = cluster
        self._jobs = jobs
        self._total = len(jobs)
        self._kill_at_walltime = kill_at_walltime
        self._commit_head = commit_head
        self._one_event = one_event_per_pass
        self._record_nodes = record_nodes
        self._skipped = list(skipped)
        self._progress = progress
        self._report_every = max(1, self._total // 200)
        self._ledger = ordering.ledger if isinstance(ordering, MultifactorOrdering) else None
        self._flat = isinstance(cluster.topology, FlatTopology)
        # On a cluster that shares nodes, what is free on each node (the free mask then says
        # which nodes are idle, for the figures).
        self._shares = FreeShares(NodePool.of(cluster)) if cluster.shared else None
        self._skip_when_full = self._flat and not commit_head and self._shares is None
        # A static ordering's queue is kept in its order (insort); others are sorted by the core.
        self._incremental = not ordering.time_dependent
        self._free = np.ones(cluster.size, dtype=bool)
        self._free_count = cluster.size
        self._queue: list[SimJob] = []  # waiting, by score when incremental
        self._running: list[SimJob] = []  # by expected_end: the core's shadow search wants it
        self._ends: list[tuple[float, int, SimJob]] = []  # heap of completions (end, seq, job)
        self._next_arrival = 0  # index in _jobs of the next job to arrive
        self._seq = 0  # start sequence: completions of one time come in start order
        self._finished_count = 0
        self._now = jobs[0].request.submit_time if jobs else 0.0
        self._head: int | str | None = None
        self._fragmented_node_seconds = 0.0
        self._fragmented_now = 0
        # What the last step did (read by step(); run() never builds a Step).
        self._step_finished: list[SimJob] = []
        self._step_arrived_from = 0
        self._step_started: Sequence[Start] = ()
        self._closed = False
        self._result: SimulationResult | None = None

    # -- views ---------------------------------------------------------------------------------

    @property
    def now(self) -> float:
        """The clock: the time of the last step (the first submit time before any step)."""
        return self._now

    @property
    def queue(self) -> tuple[SimJob, ...]:
        """Waiting jobs: in the ordering's order when it does not depend on the clock, else in
        arrival order (the scheduler sorts them at each pass)."""
        return tuple(self._queue)

    @property
    def running(self) -> tuple[SimJob, ...]:
        """Jobs holding nodes, by expected end (start + estimate), ties in start order."""
        return tuple(self._running)

    @property
    def free_nodes(self) -> int:
        """Nodes no job holds."""
        return self._free_count

    @property
    def finished_jobs(self) -> int:
        """Jobs that have ended."""
        return self._finished_count

    @property
    def done(self) -> bool:
        """No event is left: every job has arrived and ended."""
        return self._next_arrival >= self._total and not self._ends

    # -- advancing -----------------------------------------------------------------------------

    def step(self) -> Step | None:
        """Advance to the next event time and schedule; None once there is nothing left."""
        if not self._advance():
            return None
        arrived = self._jobs[self._step_arrived_from : self._next_arrival]
        return Step(
            time=self._now,
            finished=tuple(j.job_id for j in self._step_finished),
            arrived=tuple(j.job_id for j in arrived),
            started=tuple(s.job_id for s in self._step_started),
        )

    def run(self) -> SimulationResult:
        """Step to the end and return :meth:`result`."""
        advance = self._advance
        while advance():
            pass
        return self.result()

    def result(self) -> SimulationResult:
        """The records and metrics of the finished run (what :func:`simulate` returns).

        Raises:
            SimulationNotFinishedError: Events are left; call :meth:`run` first.
        """
        if self._result is None:
            if not self.done:
                raise SimulationNotFinishedError(
                    f"{self._total - self._finished_count} jobs have not ended at t={self._now};"
                    " call run() or step() until it returns None"
                )
            self._close()
            frame = _records(self._jobs)
            if self._record_nodes:
                frame["node_ids"] = [tuple(j.block.nodes.tolist()) for j in self._jobs]
            if self._shares is not None:
                # Nodes held in part count in part: what a job holds in node equivalents.
                frame["node_share"] = [
                    _node_equivalents(self._shares.pool, j.block) for j in self._jobs
                ]
            metrics = compute_metrics(
                frame,
                self._cluster.size,
                wall_s=time.perf_counter() - self._start_wall,
                fragmented_node_seconds=None if self._flat else self._fragmented_node_seconds,
            )
            self._result = SimulationResult(frame, metrics, list(self._skipped))
        return self._result

    def _advance(self) -> bool:
        """One step; False (and the end-of-run checks) when no event is left."""
        ends, arrival = self._ends, self._next_arrival
        if arrival < self._total:
            next_arrival = self._jobs[arrival].request.submit_time
        elif ends:
            next_arrival = math.inf
        else:
            self._close()
            return False
        now = min(next_arrival, ends[0][0]) if ends else next_arrival
        if self._fragmented_now:
            self._fragmented_node_seconds += self._fragmented_now * (now - self._now)
        self._now = now
        self._step_finished.clear()
        self._step_arrived_from = arrival
        self._step_started = ()
        if next_arrival > now:  # completions only
            self._take_completions(now)
        else:
            # One event at a time: an arrival at this time goes before any completion.
            if ends and ends[0][0] <= now and not self._one_event:
                self._take_completions(now)
            self._take_arrivals(now)
        if not self._queue:
            self._fragmented_now = 0
        # A flat cluster with no free node cannot start anything: skip the pass, unless a head
        # is to be committed (with commit_head the first job in order is chosen now, even when
        # it cannot start).
        elif self._free_count or not self._skip_when_full:
            self._schedule(now)
        return True

    def _take_completions(self, now: float) -> None:
        ends, running = self._ends, self._running
        ledger, progress, finished = self._ledger, self._progress, self._step_finished
        count = self._finished_count
        while ends and ends[0][0] <= now:
            job = heapq.heappop(ends)[2]
            self._release(job.block)
            i = bisect.bisect_left(running, job.expected_end, key=_EXPECTED_END)
            while running[i] is not job:  # past jobs of the same expected end, started earlier
                i += 1
            del running[i]
            if ledger is not None:
                ledger.charge(job.request.user, job.block.size * (job.end - job.start), now)
            count += 1
            finished.append(job)
            if progress is not None and count % self._report_every == 0:
                self._finished_count = count
                progress(count, self._total)
            if self._one_event:
                break
        self._finished_count = count

    def _take_arrivals(self, now: float) -> None:
        jobs, total, arrival, queue = self._jobs, self._total, self._next_arrival, self._queue
        score = self._ordering.score if self._incremental else None
        while arrival < total and jobs[arrival].request.submit_time <= now:
            job = jobs[arrival]
            if score is not None:
                job.score = score(job.request, now)
                bisect.insort(queue, job, key=_SCORE)
            else:
                queue.append(job)
            arrival += 1
            if self._one_event:
                break
        self._next_arrival = arrival

    def _schedule(self, now: float) -> None:
        """One scheduling pass over the queue, its starts applied."""
        queue = self._queue
        decisions = self._core.schedule(
            now,
            queue,
            self._running,
            self._free if self._shares is None else self._shares,
            presorted=True,
            running_sorted=True,
            committed_head=self._head,
        )
        self._head = decisions.head
        for reservation in decisions.reservations:
            reserved = _find(queue, reservation.job_id)
            if reserved is not None and math.isnan(reserved.reserved_at):
                reserved.reserved_at = reservation.start_time
        if decisions.starts:
            self._start_jobs(decisions.starts, now)
            started = {start.job_id for start in decisions.starts}
            self._queue = queue = [j for j in queue if j.job_id not in started]
            self._step_started = decisions.starts
        self._fragmented_now = 0
        if decisions.head is not None and not self._flat:
            head_job = _find(queue, decisions.head)
            if head_job is not None and self._free_count >= head_job.request.node_count:
                self._fragmented_now = self._free_count

    def _start_jobs(self, starts: Sequence[Start], now: float) -> None:
        """Start the jobs the core chose (still in the queue, which the caller then filters)."""
        queue, free, running, ends = self._queue, self._free, self._running, self._ends
        kill, seq = self._kill_at_walltime, self._seq
        for start in starts:
            job = _find(queue, start.job_id)
            if job is None:
                raise SimulationInvariantError(f"core started unknown job {start.job_id}")
            _check_start(job, start.block, free, self._shares, now)
            self._hold(start.block)
            job.start = now
            job.block = start.block
            limit = job.request.walltime_s
            duration = job.run
            if kill and limit is not None and duration > limit:
                duration, job.killed = limit, True
            job.end = now + duration
            job.expected_end = now + job.request.estimate
            bisect.insort(running, job, key=_EXPECTED_END)
            heapq.heappush(ends, (job.end, seq, job))
            seq += 1
        self._seq = seq

    def _hold(self, block: Block) -> None:
        nodes = block.nodes
        if self._shares is not None:
            self._shares.take(block)
            nodes = nodes[self._free[nodes]]  # idle until now
        self._free[nodes] = False
        self._free_count -= nodes.size

    def _release(self, block: Block) -> None:
        nodes = block.nodes
        if self._shares is not None:
            self._shares.give(block)
            nodes = nodes[self._shares.idle()[nodes]]  # idle from now
        self._free[nodes] = True
        self._free_count += nodes.size

    def _close(self) -> None:
        """The end-of-run check and the last progress report, once."""
        if self._closed:
            return
        if self._queue:
            raise SimulationInvariantError(f"{len(self._queue)} jobs never started")
        self._closed = True
        if self._progress is not None:
            self._progress(self._total, self._total)


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
    """Replay ``workload`` on ``cluster``, starting from an empty machine: the whole of
    ``Simulation(...).run()``, the arguments :class:`Simulation`'s (see there).

    Returns:
        A :class:`SimulationResult`.
    """
    return Simulation(
        cluster,
        workload,
        order=order,
        backfill=backfill,
        kill_at_walltime=kill_at_walltime,
        commit_head=commit_head,
        one_event_per_pass=one_event_per_pass,
        record_nodes=record_nodes,
        skipped=skipped,
        progress=progress,
    ).run()


def _node_equivalents(pool: NodePool, block: Block) -> float:
    """The nodes a block holds, each counted by the part of its GPUs held (its cores on a node
    without GPUs)."""
    if block.shares is None:
        return float(block.size)
    total = 0.0
    for node, share in zip(block.nodes.tolist(), block.shares, strict=True):
        gpus = int(pool.gpus[node])
        total += len(share.gpus) / gpus if gpus else len(share.cpus) / int(pool.cpus[node])
    return total


def _check_start(
    job: SimJob, block: Block, free: BoolArray, shares: FreeShares | None, now: float
) -> None:
    nodes = block.nodes
    if nodes.size != job.request.node_count and not _rounded_up(job, block):
        raise SimulationInvariantError(
            f"job {job.job_id} asked {job.request.node_count} nodes, got {nodes.size}"
        )
    held = not shares.can_take(block) if shares is not None else not free[nodes].all()
    if held:
        raise SimulationInvariantError(
            f"job {job.job_id} given nodes that are already held at t={now}"
        )
    if now < job.request.submit_time:
        raise SimulationInvariantError(f"job {job.job_id} starts before its submit")


def _find(queue: list[SimJob], job_id: int | str) -> SimJob | None:
    # Decisions name jobs near the head of the queue; a linear scan from the front is short.
    for job in queue:
        if job.job_id == job_id:
            return job
    return None


def _rounded_up(job: SimJob, block: Block) -> bool:
    """A ``:torus`` shape may be rounded up to whole allocation units."""
    shape = job.request.shape
    return shape is not None and block.size >= job.request.node_count


def _records(jobs: Sequence[SimJob]) -> pd.DataFrame:
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
