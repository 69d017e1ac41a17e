"""The scheduler daemon's state machine: a steppable :meth:`Daemon.tick` over store and backend.

One tick: poll the running jobs through the backend (one batched call), record the ones that
ended (retrying failures by their policy), enforce walltimes (SIGTERM, a grace period, SIGKILL),
settle dependencies, then ask :class:`~orchestrator.scheduling.core.SchedulerCore` (the same code
the simulator runs) which waiting jobs start now, and start them. Every state change is one event
row written before the daemon acts on it, so a daemon killed at any moment restarts to the truth
(:meth:`Daemon.recover`).

The daemon keeps the non-finished jobs in memory (it is the store's only writer, so the mirror
stays exact) and the store is the truth: :class:`~orchestrator.daemon.table.JobTable` owns that
mirror, and changes it only after the store took the change. A job's nodes are released only
once the backend says its processes are gone: a cancelled or timed-out job *drains* with its
nodes held.

When the store refuses writes (disk full, database locked) the tick skips what it could not
record and tries again at the next one; the API's changes get
:class:`~orchestrator.exceptions.StoreUnavailableError` (503); reads go on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from orchestrator.backends.contract import BaseBackend, Liveness, PollResult, TaskUsage
from orchestrator.daemon.dispatch import SIGNAL_ENV, parse_signal, record_starts, schedule
from orchestrator.daemon.job_rows import expand_dependency, job_row, regroup
from orchestrator.daemon.recovery import recover, stop_with_requeue
from orchestrator.daemon.spec import JobSpec, apply_resource_type
from orchestrator.daemon.table import Change, JobTable, LiveJob
from orchestrator.exceptions import (
    BackendError,
    ClusterConfigError,
    IdempotencyKeyReusedError,
    InvalidRequestError,
    JobStateError,
    StoreUnavailableError,
)
from orchestrator.resources.cluster import Cluster
from orchestrator.resources.shares import NodePool
from orchestrator.scheduling.capacity import FreeResources
from orchestrator.scheduling.core import SchedulerCore
from orchestrator.scheduling.job import JobState
from orchestrator.scheduling.policies import Backfill, make_ordering
from orchestrator.store import Store

log = logging.getLogger("orchestrator.daemon")

__all__ = ["SIGNAL_ENV", "Daemon", "DaemonConfig", "LiveJob", "parse_signal"]


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
        signal_before_walltime_s: Send every job with a walltime ``walltime_signal`` this many
            seconds before it (Slurm's ``--signal=USR1@90``), on every backend; None: none
            (a job's ``env`` may still ask for one: ``ORCH_SIGNAL=USR2@90``).
        walltime_signal: The signal sent then.
        requeue_code: An attempt sent that signal whose first failing task then exits with
            this status checkpointed and asks to run again: PREEMPTED, then PENDING at once,
            no retry spent (None: such an exit is a failure like any other).
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
    signal_before_walltime_s: float | None = None
    walltime_signal: int = signal.SIGUSR1
    requeue_code: int | None = 3


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
        if cluster.shared and not backend.shares_nodes:
            raise ClusterConfigError(
                f"the {backend.name} backend gives whole nodes only, and cluster "
                f"{cluster.name!r} shares nodes between jobs: use a whole-node preset (such as "
                "fugaku), or a backend that shares nodes (local, slurm, ray)"
            )
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
        self.table = JobTable(
            store,
            self.cluster_id,
            cluster.topology,
            NodePool.of(cluster) if cluster.shared else None,
        )
        self.lock = threading.RLock()
        self.wake = threading.Event()
        self.next_retry = math.inf
        """When the earliest retry backoff ends."""
        self.head: int | None = None
        """The first job in order that could not start at the last pass."""
        self._next_pass = 0.0
        self._engine_errors: dict[str, str] = {}
        """Call (``poll``, ``nodes``) -> its last BackendError; cleared when that call answers."""
        self._engine_said: str | None = None
        """The engine fault last logged (a change is logged once)."""
        self.ticks = 0
        self.started_total = 0
        self.last_tick_s = 0.0

    # The table's views, under the names the API, the launcher and the tests read.

    @property
    def waiting(self) -> dict[int, LiveJob]:
        return self.table.waiting

    @property
    def active(self) -> dict[int, LiveJob]:
        return self.table.active

    @property
    def draining(self) -> dict[int, LiveJob]:
        return self.table.draining

    @property
    def finished(self) -> dict[int, JobState]:
        return self.table.finished

    @property
    def free(self) -> npt.NDArray[np.bool_]:
        return self.table.free

    @property
    def store_fault(self) -> str | None:
        """Why the store refuses writes right now (None: it takes them)."""
        return self.table.fault

    @property
    def engine_fault(self) -> str | None:
        """Why the backend's engine does not answer right now (None: it does)."""
        return "; ".join(self._engine_errors.values()) or self.backend.engine_fault

    def _note_engine(self, call: str, error: Exception | None = None) -> None:
        """Record whether the backend's ``call`` answered; log a fault when it appears, changes
        or ends. Each call clears only its own failure: a node query that answers says nothing
        of a poll that does not."""
        if error is None:
            self._engine_errors.pop(call, None)
        else:
            self._engine_errors[call] = str(error)
        fault = self.engine_fault
        if fault != self._engine_said:
            if fault is None:
                log.info("the %s engine answers again", self.backend.name)
            else:
                log.warning("the %s engine does not answer: %s", self.backend.name, fault)
            self._engine_said = fault

    # -- submission and user actions ----------------------------------------------------------

    def submit(
        self,
        specs: Sequence[JobSpec],
        idempotency_key: str | None = None,
        fingerprint: str | None = None,
    ) -> list[list[int]]:
        """Store a batch of submissions atomically: all of them, or none.

        Args:
            specs: Validated submissions (an array submission makes one job per index).
            idempotency_key: A client's key for this batch; repeating it returns the first
                batch's ids without storing anything (a retry after a lost reply).
            fingerprint: What the key stands for (a hash of the request): the key repeated
                with another fingerprint is refused. None: not compared.

        Returns:
            Per submission, the ids of the jobs it made.

        Raises:
            InvalidRequestError: a request impossible on this cluster, or a dependency on an
                unknown job; nothing is stored.
            StoreUnavailableError: the store refused the write; nothing is stored.
            IdempotencyKeyReusedError: the key came before with another fingerprint.
        """
        now = self.clock()

        def prefix_of(i: int) -> str:
            return f"jobs[{i}]." if len(specs) > 1 else ""

        specs = [
            apply_resource_type(spec, self.cluster.resource_types, self.cluster.name)
            if spec.resource_type is not None
            else spec
            for spec in specs
        ]
        for i, spec in enumerate(specs):
            prefix = prefix_of(i)
            if SIGNAL_ENV in spec.env:
                parse_signal(spec.env[SIGNAL_ENV], f"{prefix}env.{SIGNAL_ENV}")
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
        with self.lock, self.table.change() as change:
            conn = change.conn
            if keys:
                earlier = self.store.find_idempotent(conn, keys[:1])
                if earlier is not None:
                    stored = self.store.idempotency_fingerprint(conn, keys[0])
                    if fingerprint is not None and stored is not None and stored != fingerprint:
                        raise IdempotencyKeyReusedError(idempotency_key or "")
                    found = self.store.find_idempotent(conn, keys) or []
                    return regroup(found, [len(g) for g in groups])
                k = 0
                for group in groups:
                    for row in group:
                        row["idempotency_key"] = keys[k]
                        row["idempotency_fingerprint"] = fingerprint
                        k += 1
            ids = [
                self.store.insert_jobs(conn, group, now, array=spec.array is not None)
                for spec, group in zip(specs, groups, strict=True)
            ]
            for spec, deps, group, group_ids in zip(specs, expanded, groups, ids, strict=True):
                for row, job_id in zip(group, group_ids, strict=True):
                    change.add(
                        LiveJob(
                            job_id=job_id,
                            request=spec.request,
                            state=JobState(row["state"]),
                            array_id=group_ids[0] if spec.array else None,
                            array_limit=row["array_limit"],
                            dependency=deps,
                            max_retries=spec.retries,
                            not_before=row["not_before"],
                        )
                    )
                if row["not_before"] > now:  # --begin: the pass that may start it is due then
                    self.next_retry = min(self.next_retry, row["not_before"])
        self.wake.set()
        return ids

    def cancel(self, job_id: int, reason: str = "cancelled by user") -> JobState:
        """Cancel a job: a waiting one at once, a running one by SIGTERM (then SIGKILL after
        the grace period); its nodes are freed when its processes are gone.

        Raises:
            JobNotFoundError: no such job.
            JobStateError: the job has already ended.
            StoreUnavailableError: the store refused the write; nothing changed.
        """
        now = self.clock()
        with self.lock:
            job = self.table.get(job_id)
            if job is None:
                self._raise_not_live(job_id, "cancel")
            assert job is not None
            running = job.handle is not None
            # The handle is stored with the end: a daemon restarted while the job drains
            # finds its processes again (a start not yet recorded RUNNING has it in memory only).
            self.table.move(
                job, JobState.CANCELLED, reason, now, end_time=now, drain=running, handle=job.handle
            )
            if running:
                self._signal(job, signal.SIGTERM, now)
        self.wake.set()
        return JobState.CANCELLED

    def hold(self, job_id: int) -> JobState:
        """PENDING -> HELD.

        Raises:
            JobNotFoundError: no such job.
            JobStateError: the job is not pending.
        """
        return self._move_waiting(job_id, JobState.PENDING, JobState.HELD, "held by user")

    def release(self, job_id: int) -> JobState:
        """HELD -> PENDING.

        Raises:
            JobNotFoundError: no such job.
            JobStateError: the job is not held.
        """
        return self._move_waiting(job_id, JobState.HELD, JobState.PENDING, "released by user")

    def _move_waiting(self, job_id: int, old: JobState, new: JobState, reason: str) -> JobState:
        now = self.clock()
        with self.lock:
            job = self.waiting.get(job_id)
            if job is None or job.state is not old:
                state = (
                    job.state if job is not None else JobState(self.store.get_job(job_id)["state"])
                )
                raise JobStateError(f"job {job_id} is {state}, not {old}: cannot make it {new}")
            self.table.move(job, new, reason, now)
        self.wake.set()
        return new

    def _raise_not_live(self, job_id: int, action: str) -> None:
        state = self.store.get_job(job_id)["state"]  # raises JobNotFoundError
        raise JobStateError(f"job {job_id} has already ended ({state}): cannot {action} it")

    # -- the tick -----------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """One round: poll, record endings, enforce walltimes, settle dependencies, schedule.

        A store that refuses a write stops the round where it stands (memory still equals the
        store); the next round tries the same changes again.
        """
        with self.lock:
            t0 = time.perf_counter()
            # A refused write is logged once by the table; memory is unchanged.
            with contextlib.suppress(StoreUnavailableError):
                self._round(now)
            self.ticks += 1
            self.last_tick_s = time.perf_counter() - t0

    def _round(self, now: float) -> None:
        record_starts(self, now)
        self._poll(now)
        self._walltimes(now)
        if now >= self.next_retry:
            # A retry's backoff is over: schedule now, and find the next one.
            self.table.dirty = True
            later = [j.not_before for j in self.waiting.values() if j.not_before > now]
            self.next_retry = min(later, default=math.inf)
        if self.table.dirty or now >= self._next_pass:
            self.table.dirty = False
            self._next_pass = now + self.config.reschedule_s
            try:
                schedule(self, now)
            except StoreUnavailableError:
                self.table.dirty = True  # the pass did not finish: run it again next time
                raise

    @property
    def dirty(self) -> bool:
        """Something changed since the last scheduling pass."""
        return self.table.dirty

    @dirty.setter
    def dirty(self, value: bool) -> None:
        self.table.dirty = value

    def next_wakeup(self, now: float) -> float:
        """Seconds until the tick would have something time-driven to do (capped)."""
        with self.lock:
            due = [self._next_pass, self.next_retry]
            due += [j.kill_at for j in self.table.holders() if j.kill_at is not None]
            due += [
                j.start_time + j.request.walltime_s
                for j in self.active.values()
                if j.request.walltime_s is not None
            ]
            due += [
                j.start_time + j.request.walltime_s - warn[1]
                for j in self.active.values()
                if j.request.walltime_s is not None
                and not j.warned
                and (warn := self._warning(j)) is not None
            ]
            if self.active or self.draining or self.store_fault is not None:
                due.append(now + 0.2)
        return max(0.0, min(due) - now)

    def _poll(self, now: float) -> None:
        handles = {j.job_id: j.handle for j in self.table.holders() if j.handle is not None}
        if not handles:
            return
        try:
            results = self.backend.poll(handles)
        except BackendError as e:
            # No news this tick: the jobs are polled again at the next.
            self._note_engine("poll", e)
            return
        self._note_engine("poll")
        for job_id, job in list(self.active.items()):
            result = results.get(job_id)
            if result is None or job.state is not JobState.RUNNING:
                continue
            if result.liveness is Liveness.RUNNING:
                if result.any_failed and job.failing is None:
                    # One task failed: stop the others, as Slurm's --kill-on-bad-exit.
                    job.failing = _first_failure(result)
                    self._signal(job, signal.SIGTERM, now)
                self._escalate(job, now)
                continue
            self._finish(job, result, now)
        for job_id, job in list(self.draining.items()):
            result = results.get(job_id)
            if result is None or result.liveness is not Liveness.RUNNING:
                with self.table.change() as change:
                    change.drained(job, now)
                if job.handle is not None:
                    self.backend.forget(job.handle)
            else:
                self._escalate(job, now)

    def _finish(self, job: LiveJob, result: PollResult, now: float) -> None:
        handle = job.handle
        if result.liveness is Liveness.REQUEUE:
            self._requeue(job, now)
        elif self._checkpointed(job, result):
            code = self.config.requeue_code
            self._requeue(job, now, f"checkpointed on the walltime signal (exit {code})")
        else:
            with self.table.change() as change:
                self.end_attempt(change, job, *self.outcome(job, result), now, result.usage)
        if handle is not None:
            self.backend.forget(handle)

    def outcome(self, job: LiveJob, result: PollResult) -> tuple[JobState, str, int | None]:
        """The end state, reason and exit code of an attempt whose tasks have all ended."""
        if result.liveness is Liveness.EXITED and not result.any_failed:
            return JobState.COMPLETED, "every task exited 0", 0
        if result.liveness is Liveness.EXITED or result.any_failed:
            rank, exit_code = job.failing or _first_failure(result)
            how = f"signal {exit_code - 128}" if exit_code > 128 else f"status {exit_code}"
            return JobState.FAILED, f"task {rank} exited with {how}", exit_code
        return JobState.NODE_FAIL, "its processes vanished without a status", None

    def _checkpointed(self, job: LiveJob, result: PollResult) -> bool:
        """The attempt was sent the signal before its walltime, and its first failing task
        exited with the requeue code: it checkpointed and asks to run again."""
        code = self.config.requeue_code
        if not job.warned or code is None or result.liveness is not Liveness.EXITED:
            return False
        if not result.any_failed:
            return False
        return (job.failing or _first_failure(result))[1] == code

    def _requeue(self, job: LiveJob, now: float, why: str = "ended by the engine") -> None:
        """The engine ended the attempt through no fault of the job, or the job checkpointed
        on the walltime signal: queue it again at once (a retry is not spent; a checkpointing
        job resumes)."""
        with self.table.change() as change:
            change.move(job, JobState.PREEMPTED, f"{why} (requeue)", now)
            change.move(job, JobState.PENDING, "requeued", now, handle=None)

            def spare_the_retry() -> None:
                # Attempts count every start (handles and output folders are per attempt); the
                # retry budget grows by one so this requeue does not spend it. Kept in memory
                # only: after a daemon restart the stored budget applies.
                job.max_retries += 1

            change.after(spare_the_retry)

    def end_attempt(
        self,
        change: Change,
        job: LiveJob,
        new: JobState,
        reason: str,
        exit_code: int | None,
        now: float,
        usage: Sequence[TaskUsage | None] = (),
    ) -> None:
        """Record an attempt's end in ``change``, with what its tasks used (``usage``, per rank:
        the job's accounting is its last attempt's); requeue by the retry policy (same
        transaction). The job's nodes are freed as it leaves its active state."""
        change.move(
            job, new, reason, now, end_time=now, exit_code=exit_code, **usage_columns(usage)
        )
        if new in (JobState.FAILED, JobState.NODE_FAIL) and job.attempts <= job.max_retries:
            delay = min(
                self.config.retry_backoff_s * 2 ** max(job.attempts - 1, 0),
                self.config.max_backoff_s,
            )
            not_before = now + delay
            change.move(
                job,
                JobState.PENDING,
                f"requeued: retry {job.attempts} of {job.max_retries} in {delay:g}s ({reason})",
                now,
                not_before=not_before,
                handle=None,
            )

            def wake_for_retry() -> None:
                self.next_retry = min(self.next_retry, not_before)

            change.after(wake_for_retry)

    def _warning(self, job: LiveJob) -> tuple[int, float] | None:
        """The signal a job is sent before its walltime, and how long before (None: none):
        its own ``ORCH_SIGNAL`` (read once from its stored ``env``), else the daemon's."""
        if not job.warn_known:
            env = self.store.get_job(job.job_id)["env"] or {}
            text = env.get(SIGNAL_ENV)
            with contextlib.suppress(InvalidRequestError):  # checked at submit
                job.warn = parse_signal(text) if text else None
            job.warn_known = True
        if job.warn is not None:
            return job.warn
        before = self.config.signal_before_walltime_s
        return None if before is None else (self.config.walltime_signal, before)

    def _warn(self, job: LiveJob, now: float) -> None:
        """Signal a running job before its walltime, once an attempt (Slurm's ``--signal``)."""
        limit = job.request.walltime_s
        if limit is None or job.warned or job.handle is None or job.state is not JobState.RUNNING:
            return
        warning = self._warning(job)
        if warning is None or now < job.start_time + limit - warning[1]:
            return
        signum, before = warning
        job.warned = True
        log.info(
            "job %d: %s, %gs before its walltime", job.job_id, signal.Signals(signum).name, before
        )
        self.backend.signal(job.handle, signum)

    def _walltimes(self, now: float) -> None:
        for job in list(self.active.values()):
            self._warn(job, now)
            limit = job.request.walltime_s
            if limit is None or now < job.start_time + limit or job.state is not JobState.RUNNING:
                continue
            self.table.move(
                job,
                JobState.TIMEOUT,
                f"walltime {limit:g}s reached: SIGTERM, SIGKILL after {self.config.grace_s:g}s",
                now,
                end_time=now,
                drain=job.handle is not None,
                handle=job.handle,
            )
            if job.handle is not None:
                self._signal(job, signal.SIGTERM, now)

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

    def schedulable(self) -> FreeResources:
        """What the backend can give now, offered to the scheduler core: the free nodes not
        down, drained or busy with other users' jobs (on a cluster that shares nodes, what is
        free on each of those nodes)."""
        free = self.free
        shares = self.table.shares
        try:
            unavailable = self.backend.unavailable_nodes()
        except BackendError as e:
            self._note_engine("nodes", e)
            # The engine cannot say which nodes it has: start nothing.
            return shares.without(range(self.cluster.size)) if shares else np.zeros_like(free)
        self._note_engine("nodes")
        if not unavailable:
            return free if shares is None else shares
        index_of = self.cluster.topology.index_of
        down: list[int] = []
        for name in unavailable:
            with contextlib.suppress(KeyError):  # a node outside our pool
                down.append(index_of(name))
        if shares is not None:
            return shares.without(down)
        free = free.copy()
        free[down] = False
        return free

    # -- recovery and stop --------------------------------------------------------------------

    def recover(self, now: float | None = None) -> dict[str, int]:
        """Rebuild the in-memory mirror from the store after a (possibly violent) restart.

        Jobs caught while STARTING are aborted; an attempt every task of which had already
        ended is recorded as it ended, any other fails as NODE_FAIL (retried by policy).
        RUNNING jobs are re-attached by their handle (the next tick's poll tells whether their
        processes still live, by pid plus start time); finished jobs still holding nodes drain
        again; any other held node is a leak and is released.

        Returns:
            Counts of what was found (waiting, reattached, aborted, ended, draining, leaked).

        Raises:
            StoreUnavailableError: the store refused a write; call again once it takes writes.
        """
        now = self.clock() if now is None else now
        with self.lock:
            return recover(self, now)

    def stop(self, requeue: bool | None = None, timeout_s: float | None = None) -> int:
        """Graceful stop. With requeue (default: ``config.on_stop == "requeue"``) running jobs
        are terminated, recorded PREEMPTED and queued again; otherwise they keep running and a
        restarted daemon re-attaches them. Returns how many jobs were requeued."""
        if requeue is None:
            requeue = self.config.on_stop == "requeue"
        try:
            if not requeue:
                return 0
            with self.lock:
                grace = self.config.grace_s if timeout_s is None else timeout_s
                return stop_with_requeue(self, self.clock(), grace)
        finally:
            self.backend.close()

    # -- views --------------------------------------------------------------------------------

    def pending_reason(self, job_id: int) -> str | None:
        """Why a waiting job waits, in Slurm's reason words (None: not waiting here)."""
        with self.lock:  # the tick thread changes these mappings
            job = self.waiting.get(job_id)
            active = list(self.active.values())
            head = self.head
        if job is None:
            return None
        if job.state is JobState.HELD:
            return "JobHeldUser"
        engine = self.engine_fault
        if engine is not None:
            return f"EngineDown ({self.backend.name}: {engine})"
        if job.dependency:
            return "Dependency"
        if job.not_before > self.clock() and job.attempts:
            return f"BeginTime (retry {job.attempts} of {job.max_retries}, backoff)"
        if job.not_before > self.clock():
            return "BeginTime"
        limit = job.array_limit
        if limit is not None and sum(j.array_id == job.array_id for j in active) >= limit:
            return "JobArrayTaskLimit"
        per_user = self.config.max_jobs_per_user
        user = job.request.user
        if per_user is not None and sum(j.request.user == user for j in active) >= per_user:
            return "QOSMaxJobsPerUserLimit"
        # A full cluster skips the pass (no head is computed): every job waits for nodes.
        full = head is None and not self.free.any()
        return "Resources" if job_id == head or full else "Priority"

    def node_owners(self) -> list[int | None]:
        """Per node index, the id of the job holding it (None: free; on a cluster that shares
        nodes, the first of the jobs holding part of it)."""
        owners: list[int | None] = [None] * self.cluster.size
        with self.lock:
            for job in self.table.holders():
                if job.block is not None:
                    for n in job.block.nodes:
                        if owners[int(n)] is None:
                            owners[int(n)] = job.job_id
        return owners

    def node_usage(self) -> list[dict[str, Any]] | None:
        """On a cluster that shares nodes, per node: cores, GPUs and MB in use and in all, the
        jobs holding part of it and Slurm's word for it (IDLE, MIXED: some cores in use,
        ALLOCATED: all); None on a whole-node cluster."""
        shares, pool = self.table.shares, self.table.pool
        if shares is None or pool is None:
            return None
        with self.lock:
            jobs_on: list[list[int]] = [[] for _ in range(self.cluster.size)]
            for job in self.table.holders():
                if job.block is not None:
                    for n in job.block.nodes:
                        jobs_on[int(n)].append(job.job_id)
            usage = []
            for i in range(self.cluster.size):
                cpus, used = int(pool.cpus[i]), int(pool.cpus[i] - shares.n_cores[i])
                state = "IDLE" if not jobs_on[i] else "ALLOCATED" if used >= cpus else "MIXED"
                usage.append(
                    {
                        "state": state,
                        "cpus": [used, cpus],
                        "gpus": [int(pool.gpus[i] - shares.n_gpus[i]), int(pool.gpus[i])],
                        "mem_mb": [int(pool.mem[i] - shares.mem[i]), int(pool.mem[i])],
                        "jobs": sorted(jobs_on[i]),
                    }
                )
        return usage


def usage_columns(usage: Sequence[TaskUsage | None]) -> dict[str, Any]:
    """The jobs table's accounting columns for an attempt's per-task ``usage``: CPU seconds
    summed, the largest peak RSS in MB (2**20 bytes), and each task's; None where unknown.

    >>> usage_columns([TaskUsage(1.5, 2048), None, TaskUsage(0.25, 1024)])["max_rss_mb"]
    2.0
    >>> usage_columns([])
    {'cpu_time_s': None, 'max_rss_mb': None, 'task_usage': None}
    """
    cpu = [u.cpu_s for u in usage if u is not None and u.cpu_s is not None]
    rss = [u.maxrss_kib for u in usage if u is not None and u.maxrss_kib is not None]
    tasks = [
        None
        if u is None
        else {
            "cpu_s": u.cpu_s,
            "max_rss_mb": None if u.maxrss_kib is None else u.maxrss_kib / 1024,
        }
        for u in usage
    ]
    return {
        "cpu_time_s": math.fsum(cpu) if cpu else None,
        "max_rss_mb": max(rss) / 1024 if rss else None,
        "task_usage": tasks if cpu or rss else None,
    }


def _first_failure(result: PollResult) -> tuple[int, int]:
    """(rank, status) of the task that failed first, as far as the statuses tell: the lowest
    rank that did not end by SIGTERM (the signal we stop a failed task's siblings with; a
    daemon restarted meanwhile no longer knows which failed first), else the lowest rank."""
    failed = [(rank, c) for rank, c in enumerate(result.exit_codes) if c not in (None, 0)]
    stopped = 128 + signal.SIGTERM
    return next(((rank, c) for rank, c in failed if c != stopped), failed[0])
