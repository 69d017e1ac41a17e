"""The scheduler daemon's state machine: a steppable :meth:`Daemon.tick` over store and backend.

One tick: poll the running jobs through the backend (one batched call), record the ones that
ended (retrying failures by their policy), enforce walltimes (SIGTERM, a grace period, SIGKILL),
settle dependencies, then ask :class:`~orchestrator.scheduling.core.SchedulerCore` (the same code
the simulator runs) which waiting jobs start now, and start them. Every state change is one event
row written before the daemon acts on it, so a daemon killed at any moment restarts to the truth
(:meth:`Daemon.recover`).

The daemon keeps the non-finished jobs in memory (it is the store's only writer, so the mirror
stays exact) and the store is the truth. A job's nodes are released only once the backend says
its processes are gone: a cancelled or timed-out job *drains* with its nodes held.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Connection

from launchers._base import BaseBackend, Handle, LaunchSpec, Liveness, PollResult
from orchestrator.daemon.recovery import recover, stop_with_requeue
from orchestrator.daemon.rows import expand_dependency, job_row, regroup
from orchestrator.daemon.spec import JobSpec
from orchestrator.exceptions import (
    BackendError,
    IllegalTransitionError,
    InvalidRequestError,
    JobNotFoundError,
    JobStateError,
)
from orchestrator.resources.cluster import Cluster
from orchestrator.resources.request import JobRequest
from orchestrator.resources.topology import Block
from orchestrator.scheduling.core import SchedulerCore
from orchestrator.scheduling.job import JobState
from orchestrator.scheduling.policies import Backfill, make_ordering
from orchestrator.store import Store

__all__ = ["Daemon", "DaemonConfig", "LiveJob"]

S = JobState


@dataclass(frozen=True)
class DaemonConfig:
    """Scheduling policy and limits of one daemon.

    Attributes:
        order: Queue ordering (see :func:`make_ordering`).
        backfill: Backfilling mode.
        grace_s: Seconds between SIGTERM and SIGKILL (walltime, cancel).
        retry_backoff_s: First retry delay; doubles per attempt up to ``max_backoff_s``.
        max_jobs_per_user: Running jobs per user (Slurm's MaxJobsPerUser); None: no limit.
        max_nodes_per_user: Nodes held per user; None: no limit.
        reschedule_s: A scheduling pass runs at least this often even if nothing changed.
        on_stop: What a graceful stop does to running jobs: ``keep`` them running (re-attached
            on restart) or ``requeue`` them (terminated, PREEMPTED, back to PENDING).
    """

    order: str = "fcfs"
    backfill: Backfill = Backfill.EASY
    grace_s: float = 10.0
    retry_backoff_s: float = 1.0
    max_backoff_s: float = 300.0
    max_jobs_per_user: int | None = None
    max_nodes_per_user: int | None = None
    reschedule_s: float = 5.0
    on_stop: str = "keep"


@dataclass(eq=False)
class LiveJob:
    """The daemon's mirror of a job that is waiting, running or draining."""

    job_id: int
    request: JobRequest
    state: JobState
    array_id: int | None = None
    array_limit: int | None = None
    dependency: tuple[tuple[str, int], ...] = ()
    max_retries: int = 0
    attempts: int = 0
    not_before: float = 0.0
    start_time: float = math.nan
    block: Block | None = None
    handle: Handle | None = None
    kill_at: float | None = None
    killed: bool = False
    failing: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Daemon:
    """Drives the scheduler core with a clock, a store and a backend.

    Args:
        store: The job store (the daemon is its only writer).
        cluster: The cluster it schedules.
        backend: Runs the allocated jobs.
        config: Policy and limits.
        clock: The wall clock (tests inject their own; :meth:`tick` takes ``now`` anyway).

    Thread safety: every public method takes the daemon's lock; the API calls them from its
    request threads while the loop thread ticks.
    """

    def __init__(
        self,
        store: Store,
        cluster: Cluster,
        backend: BaseBackend,
        config: DaemonConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.backend = backend
        self.config = config or DaemonConfig()
        self.clock = clock
        self.core = SchedulerCore(
            cluster.topology, make_ordering(self.config.order, cluster.size), self.config.backfill
        )
        self.cluster_id = store.ensure_cluster(
            cluster.name, cluster.topology.kind, cluster.size, cluster.topology.describe()
        )
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.waiting: dict[int, LiveJob] = {}
        self.active: dict[int, LiveJob] = {}
        self.draining: dict[int, LiveJob] = {}
        self.free = np.ones(cluster.size, dtype=bool)
        self._finished: dict[int, JobState] = {}
        self.dependent: set[int] = set()
        """Waiting jobs whose dependencies are not settled yet."""
        self._dirty = True
        self._next_pass = 0.0
        self.ticks = 0
        self.started_total = 0
        self.last_tick_s = 0.0

    # -- recovery -----------------------------------------------------------------------------

    # -- submission and user actions ----------------------------------------------------------

    def submit(
        self, specs: Sequence[JobSpec], idempotency_key: str | None = None
    ) -> list[list[int]]:
        """Store a batch of submissions atomically: all of them, or none.

        Args:
            specs: Validated submissions (an array submission makes one job per index).
            idempotency_key: A client's key for this batch; repeating it returns the first
                batch's ids without storing anything (a retry after a lost reply).

        Returns:
            Per submission, the ids of the jobs it made.

        Raises:
            InvalidRequestError: a request impossible on this cluster, or a dependency on an
                unknown job; nothing is stored.
        """
        now = self.clock()

        def prefix_of(i: int) -> str:
            return f"jobs[{i}]." if len(specs) > 1 else ""

        for i, spec in enumerate(specs):
            prefix = prefix_of(i)
            try:
                self.cluster.check_request(spec.request)
            except InvalidRequestError as e:
                raise InvalidRequestError(prefix + e.field, e.value, e.reason, e.example) from e
        expanded = [
            expand_dependency(self.store, spec, prefix_of(i) + "dependency")
            for i, spec in enumerate(specs)
        ]
        groups: list[list[dict[str, Any]]] = []
        for spec, deps in zip(specs, expanded, strict=True):
            indices: Sequence[int | None] = spec.array.indices if spec.array else [None]
            groups.append([job_row(spec, deps, index, now, self.cluster_id) for index in indices])
        n_rows = sum(len(g) for g in groups)
        keys = [f"{idempotency_key}:{k}" for k in range(n_rows)] if idempotency_key else []
        with self.lock:
            with self.store.write() as conn:
                if keys:
                    earlier = self.store.find_idempotent(conn, keys[:1])
                    if earlier is not None:
                        found = self.store.find_idempotent(conn, keys) or []
                        return regroup(found, [len(g) for g in groups])
                    k = 0
                    for group in groups:
                        for row in group:
                            row["idempotency_key"] = keys[k]
                            k += 1
                ids = [
                    self.store.insert_jobs(conn, group, now, array=spec.array is not None)
                    for spec, group in zip(specs, groups, strict=True)
                ]
            for spec, deps, group, group_ids in zip(specs, expanded, groups, ids, strict=True):
                for row, job_id in zip(group, group_ids, strict=True):
                    self.waiting[job_id] = LiveJob(
                        job_id=job_id,
                        request=spec.request,
                        state=JobState(row["state"]),
                        array_id=group_ids[0] if spec.array else None,
                        array_limit=row["array_limit"],
                        dependency=deps,
                        max_retries=spec.retries,
                    )
                    if deps:
                        self.dependent.add(job_id)
            self._dirty = True
        self.wake.set()
        return ids

    def cancel(self, job_id: int, reason: str = "cancelled by user") -> JobState:
        """Cancel a job: a waiting one at once, a running one by SIGTERM (then SIGKILL after
        the grace period); its nodes are freed when its processes are gone.

        Raises:
            JobNotFoundError: no such job.
            JobStateError: the job has already ended.
        """
        now = self.clock()
        with self.lock:
            job = self.waiting.get(job_id) or self.active.get(job_id)
            if job is None:
                self._raise_not_live(job_id, "cancel")
            assert job is not None
            with self.store.write() as conn:
                self.store.transition(
                    conn, job_id, job.state, S.CANCELLED, reason, now, end_time=now
                )
            self._finished[job_id] = S.CANCELLED
            if job.state.is_waiting:
                del self.waiting[job_id]
            else:
                del self.active[job_id]
                self._drain(job, now)
            job.state = S.CANCELLED
            self._dirty = True
        self.wake.set()
        return S.CANCELLED

    def hold(self, job_id: int) -> JobState:
        """PENDING -> HELD.

        Raises:
            JobNotFoundError: no such job.
            JobStateError: the job is not pending.
        """
        return self._move_waiting(job_id, S.PENDING, S.HELD, "held by user")

    def release(self, job_id: int) -> JobState:
        """HELD -> PENDING.

        Raises:
            JobNotFoundError: no such job.
            JobStateError: the job is not held.
        """
        return self._move_waiting(job_id, S.HELD, S.PENDING, "released by user")

    def _move_waiting(self, job_id: int, old: JobState, new: JobState, reason: str) -> JobState:
        now = self.clock()
        with self.lock:
            job = self.waiting.get(job_id)
            if job is None or job.state is not old:
                state = (
                    job.state if job is not None else JobState(self.store.get_job(job_id)["state"])
                )
                raise JobStateError(f"job {job_id} is {state}, not {old}: cannot make it {new}")
            with self.store.write() as conn:
                self.store.transition(conn, job_id, old, new, reason, now)
            job.state = new
            self._dirty = True
        self.wake.set()
        return new

    def _raise_not_live(self, job_id: int, action: str) -> None:
        state = self.store.get_job(job_id)["state"]  # raises JobNotFoundError
        raise JobStateError(f"job {job_id} has already ended ({state}): cannot {action} it")

    # -- the tick -----------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """One round: poll, record endings, enforce walltimes, settle dependencies, schedule."""
        t0 = time.perf_counter()
        with self.lock:
            self._poll(now)
            self._walltimes(now)
            if self._dirty or now >= self._next_pass:
                self._dirty = False
                self._next_pass = now + self.config.reschedule_s
                self._schedule(now)
            self.ticks += 1
        self.last_tick_s = time.perf_counter() - t0

    def next_wakeup(self, now: float) -> float:
        """Seconds until the tick would have something time-driven to do (capped)."""
        with self.lock:
            due = [self._next_pass]
            due += [
                j.kill_at
                for j in (*self.active.values(), *self.draining.values())
                if j.kill_at is not None
            ]
            due += [
                j.start_time + j.request.walltime_s
                for j in self.active.values()
                if j.request.walltime_s is not None
            ]
            if self.active or self.draining:
                due.append(now + 0.2)
        return max(0.0, min(due) - now)

    def _poll(self, now: float) -> None:
        handles = {
            i: j.handle
            for i, j in (*self.active.items(), *self.draining.items())
            if j.handle is not None
        }
        if not handles:
            return
        results = self.backend.poll(handles)
        for job_id, job in list(self.active.items()):
            result = results.get(job_id)
            if result is None:
                continue
            if result.liveness is Liveness.RUNNING:
                if result.any_failed and job.failing is None:
                    # One task failed: stop the others, as Slurm's --kill-on-bad-exit.
                    job.failing = _failure_text(result)
                    self._signal(job, signal.SIGTERM, now)
                self._escalate(job, now)
                continue
            del self.active[job_id]
            self._finish(job, result, now)
        for job_id, job in list(self.draining.items()):
            result = results.get(job_id)
            if result is None or result.liveness is not Liveness.RUNNING:
                del self.draining[job_id]
                self._free(job, now)
                if job.handle is not None:
                    self.backend.forget(job.handle)
            else:
                self._escalate(job, now)

    def _finish(self, job: LiveJob, result: PollResult, now: float) -> None:
        codes = [c for c in result.exit_codes if c is not None]
        if result.liveness is Liveness.EXITED and not result.any_failed:
            new, reason, exit_code = S.COMPLETED, "every task exited 0", 0
        elif result.liveness is Liveness.EXITED or result.any_failed:
            exit_code = next(c for c in codes if c != 0)
            new, reason = S.FAILED, job.failing or _failure_text(result)
        else:
            new, reason, exit_code = S.NODE_FAIL, "its processes vanished without a status", None
        with self.store.write() as conn:
            self.store.release(conn, job.job_id, now)
            self.end_attempt(conn, job, new, reason, now, exit_code)
        self._release_nodes(job)
        if job.handle is not None:
            self.backend.forget(job.handle)

    def end_attempt(
        self,
        conn: Connection,
        job: LiveJob,
        new: JobState,
        reason: str,
        now: float,
        exit_code: int | None,
    ) -> None:
        """Record an attempt's end; requeue by the retry policy (same transaction)."""
        self.store.transition(
            conn, job.job_id, job.state, new, reason, now, end_time=now, exit_code=exit_code
        )
        job.state = new
        retry = new in (S.FAILED, S.NODE_FAIL) and job.attempts <= job.max_retries
        if retry:
            delay = min(
                self.config.retry_backoff_s * 2 ** max(job.attempts - 1, 0),
                self.config.max_backoff_s,
            )
            job.not_before = now + delay
            self.store.transition(
                conn,
                job.job_id,
                new,
                S.PENDING,
                f"requeued: retry {job.attempts} of {job.max_retries} in {delay:g}s ({reason})",
                now,
                not_before=job.not_before,
                handle=None,
            )
            job.state = S.PENDING
            job.handle, job.block, job.kill_at, job.killed, job.failing = (
                None,
                None,
                None,
                False,
                None,
            )
            self.waiting[job.job_id] = job
        else:
            self._finished[job.job_id] = new
        self._dirty = True

    def _walltimes(self, now: float) -> None:
        for job_id, job in list(self.active.items()):
            limit = job.request.walltime_s
            if limit is None or now < job.start_time + limit or job.state is not S.RUNNING:
                continue
            with self.store.write() as conn:
                self.store.transition(
                    conn,
                    job_id,
                    S.RUNNING,
                    S.TIMEOUT,
                    f"walltime {limit:g}s reached: SIGTERM, SIGKILL after {self.config.grace_s:g}s",
                    now,
                    end_time=now,
                )
            job.state = S.TIMEOUT
            self._finished[job_id] = S.TIMEOUT
            del self.active[job_id]
            self._drain(job, now)
            self._dirty = True

    def _drain(self, job: LiveJob, now: float) -> None:
        if job.handle is None:
            self._free(job, now)
            return
        self._signal(job, signal.SIGTERM, now)
        self.draining[job.job_id] = job

    def _signal(self, job: LiveJob, signum: int, now: float) -> None:
        assert job.handle is not None
        self.backend.signal(job.handle, signum)
        if signum == signal.SIGTERM and job.kill_at is None:
            job.kill_at = now + self.config.grace_s

    def _escalate(self, job: LiveJob, now: float) -> None:
        if job.kill_at is not None and now >= job.kill_at and job.handle is not None:
            # Repeated every tick until the processes are gone.
            self.backend.signal(job.handle, signal.SIGKILL)
            job.killed = True

    def _free(self, job: LiveJob, now: float) -> None:
        with self.store.write() as conn:
            self.store.release(conn, job.job_id, now)
        self._release_nodes(job)
        self._dirty = True

    def _release_nodes(self, job: LiveJob) -> None:
        if job.block is not None:
            self.free[job.block.nodes] = True
            job.block = None

    # -- scheduling ---------------------------------------------------------------------------

    def _dependency_state(self, job_id: int) -> JobState:
        live = self.waiting.get(job_id) or self.active.get(job_id)
        if live is not None:
            return live.state
        state = self._finished.get(job_id)
        if state is None:
            try:
                state = JobState(self.store.get_job(job_id)["state"])
            except JobNotFoundError:
                state = S.CANCELLED
            if state.is_finished:
                self._finished[job_id] = state
        return state

    def _settle_dependencies(self, job: LiveJob, now: float) -> bool:
        """True when every dependency holds; cancels the job when one never can."""
        waiting = False
        for kind, dep in job.dependency:
            state = self._dependency_state(dep)
            if not state.is_finished:
                waiting = True
                continue
            ok = state is S.COMPLETED
            if (kind == "afterok" and not ok) or (kind == "afternotok" and ok):
                with self.store.write() as conn:
                    self.store.transition(
                        conn,
                        job.job_id,
                        S.PENDING,
                        S.CANCELLED,
                        f"dependency never satisfied: {kind}:{dep} ended {state}",
                        now,
                        end_time=now,
                    )
                job.state = S.CANCELLED
                self._finished[job.job_id] = S.CANCELLED
                del self.waiting[job.job_id]
                self.dependent.discard(job.job_id)
                self._dirty = True
                return False
        if waiting:
            return False
        job.dependency = ()
        self.dependent.discard(job.job_id)
        return True

    def _schedule(self, now: float) -> None:
        cfg = self.config
        running = list(self.active.values()) + list(self.draining.values())
        user_jobs: dict[str, int] = {}
        user_nodes: dict[str, int] = {}
        array_active: dict[int, int] = {}
        for job in self.active.values():
            user = job.request.user
            user_jobs[user] = user_jobs.get(user, 0) + 1
            user_nodes[user] = user_nodes.get(user, 0) + (job.block.size if job.block else 0)
            if job.array_id is not None:
                array_active[job.array_id] = array_active.get(job.array_id, 0) + 1
        # Dependencies are settled even while the cluster is full, so a job whose dependency
        # can never be satisfied is cancelled as soon as that is known.
        for job_id in list(self.dependent):
            job_or_none = self.waiting.get(job_id)
            if job_or_none is None or not job_or_none.dependency:
                self.dependent.discard(job_id)
            elif job_or_none.state is S.PENDING:
                self._settle_dependencies(job_or_none, now)
        if not self.free.any():
            return
        eligible: list[LiveJob] = []
        for job in self.waiting.values():
            if job.state is not S.PENDING or job.not_before > now or job.dependency:
                continue
            if (
                job.array_limit is not None
                and job.array_id is not None
                and array_active.get(job.array_id, 0) >= job.array_limit
            ):
                continue
            if (
                cfg.max_jobs_per_user is not None
                and user_jobs.get(job.request.user, 0) >= cfg.max_jobs_per_user
            ):
                continue
            eligible.append(job)
        if not eligible:
            return
        decisions = self.core.schedule(
            now, eligible, [_Holder(j) for j in running if j.block is not None], self.free
        )
        for start in decisions.starts:
            job = self.waiting[int(start.job_id)]
            user = job.request.user
            if job.array_limit is not None and job.array_id is not None:
                if array_active.get(job.array_id, 0) >= job.array_limit:
                    continue
                array_active[job.array_id] = array_active.get(job.array_id, 0) + 1
            if (
                cfg.max_jobs_per_user is not None
                and user_jobs.get(user, 0) >= cfg.max_jobs_per_user
            ):
                continue
            nodes_after = user_nodes.get(user, 0) + start.block.size
            if cfg.max_nodes_per_user is not None and nodes_after > cfg.max_nodes_per_user:
                continue
            user_jobs[user] = user_jobs.get(user, 0) + 1
            user_nodes[user] = user_nodes.get(user, 0) + start.block.size
            self._start(job, start.block, now)

    def _start(self, job: LiveJob, block: Block, now: float) -> None:
        nodes = [int(n) for n in block.nodes]
        if not self.free[nodes].all():  # the core never does this; refuse rather than share
            raise IllegalTransitionError(f"job {job.job_id} was given nodes already held")
        names = [self.cluster.topology.node_name(n) for n in nodes]
        attempt = job.attempts + 1
        with self.store.write() as conn:
            self.store.transition(
                conn,
                job.job_id,
                S.PENDING,
                S.STARTING,
                f"attempt {attempt} on {len(nodes)} nodes",
                now,
                attempts=attempt,
                start_time=now,
                end_time=None,
                exit_code=None,
            )
            self.store.allocate(conn, self.cluster_id, job.job_id, attempt, nodes, names, now)
        del self.waiting[job.job_id]
        job.state, job.attempts, job.start_time, job.block = S.STARTING, attempt, now, block
        self.free[nodes] = False
        self.active[job.job_id] = job
        row = self.store.get_job(job.job_id)
        env = dict(row["env"])
        if job.array_id is not None:
            env["ORCH_ARRAY_JOB_ID"] = str(job.array_id)
        spec = LaunchSpec(
            job_id=job.job_id,
            attempt=attempt,
            argv=row["argv"],
            script=row["script"],
            nodes=names,
            tasks_per_node=job.request.tasks_per_node,
            cpus_per_task=job.request.cpus_per_task,
            env=env,
            workdir=row["workdir"],
            name=row["name"],
        )
        try:
            handle = self.backend.start(spec)
        except BackendError as e:
            del self.active[job.job_id]
            with self.store.write() as conn:
                self.store.release(conn, job.job_id, now)
                self.end_attempt(conn, job, S.FAILED, str(e), now, None)
            self._release_nodes(job)
            return
        with self.store.write() as conn:
            self.store.transition(
                conn,
                job.job_id,
                S.STARTING,
                S.RUNNING,
                f"running on {','.join(names)}",
                now,
                handle=handle,
            )
        job.state, job.handle = S.RUNNING, handle
        self.started_total += 1

    # -- recovery and stop --------------------------------------------------------------------

    def recover(self, now: float | None = None) -> dict[str, int]:
        """Rebuild the in-memory mirror from the store after a (possibly violent) restart.

        Jobs caught while STARTING are aborted and failed as NODE_FAIL (retried by policy);
        RUNNING jobs are re-attached by their handle (the next tick's poll tells whether their
        processes still live, by pid plus start time); finished jobs still holding nodes drain
        again; any other held node is a leak and is released.

        Returns:
            Counts of what was found (waiting, reattached, aborted, draining, leaked).
        """
        now = self.clock() if now is None else now
        with self.lock:
            counts = recover(self, now)
            self._dirty = True
        return counts

    def stop(self, requeue: bool | None = None, timeout_s: float | None = None) -> int:
        """Graceful stop. With requeue (default: ``config.on_stop == "requeue"``) running jobs
        are terminated, recorded PREEMPTED and queued again; otherwise they keep running and a
        restarted daemon re-attaches them. Returns how many jobs were requeued."""
        if requeue is None:
            requeue = self.config.on_stop == "requeue"
        if not requeue:
            return 0
        with self.lock:
            grace = self.config.grace_s if timeout_s is None else timeout_s
            return stop_with_requeue(self, self.clock(), grace)

    # -- views --------------------------------------------------------------------------------

    def node_owners(self) -> list[int | None]:
        """Per node index, the id of the job holding it (None: free)."""
        owners: list[int | None] = [None] * self.cluster.size
        with self.lock:
            for job in (*self.active.values(), *self.draining.values()):
                if job.block is not None:
                    for n in job.block.nodes:
                        owners[int(n)] = job.job_id
        return owners


class _Holder:
    """A running job as the scheduler core sees it (its block is known)."""

    __slots__ = ("block", "job_id", "request", "start_time")

    def __init__(self, job: LiveJob) -> None:
        assert job.block is not None
        self.job_id = job.job_id
        self.request = job.request
        self.block: Block = job.block
        self.start_time = job.start_time


def _failure_text(result: PollResult) -> str:
    bad = [(rank, c) for rank, c in enumerate(result.exit_codes) if c not in (None, 0)]
    rank, code = bad[0]
    how = f"signal {code - 128}" if code > 128 else f"status {code}"
    return f"task {rank} exited with {how}"
