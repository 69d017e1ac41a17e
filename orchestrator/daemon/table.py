"""The one owner of the daemon's live jobs: their state, which queue holds them, their nodes.

Every change of a job goes through a :class:`Change` (one store transaction): its moves are
written first, and memory (the job's state and fields, the ``waiting``/``active``/``draining``
membership, the free-node mask) follows only once the transaction has committed. A write that
fails (disk full, database locked) leaves memory exactly as the store still has it, so the same
change can simply be tried again later.

Nodes are freed in exactly two places: when a job leaves an active state without draining
(:meth:`Change.move`), and when a draining job's processes are gone (:meth:`Change.drained`).

>>> sorted(s.value for s in ACTIVE)
['RUNNING', 'STARTING']
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection

from orchestrator.backends.contract import Handle
from orchestrator.exceptions import IllegalTransitionError, StoreUnavailableError
from orchestrator.resources.request import JobRequest
from orchestrator.resources.shares import FreeShares, NodePool
from orchestrator.resources.topology import BaseTopology, Block
from orchestrator.scheduling.job import JobState
from orchestrator.store import Store

__all__ = ["ACTIVE", "WAITING", "Change", "JobTable", "LiveJob"]

log = logging.getLogger("orchestrator.daemon")

WAITING = frozenset({JobState.PENDING, JobState.HELD})
ACTIVE = frozenset({JobState.STARTING, JobState.RUNNING})

# Stored fields that the in-memory job mirrors (any other field is stored only).
_MIRRORED = ("attempts", "start_time", "not_before", "handle")


@dataclass(eq=False)
class LiveJob:
    """The daemon's mirror of a job that is waiting, running or draining.

    Only a :class:`Change` sets ``state``, ``block`` and the mirrored stored fields; the rest is
    the tick's own bookkeeping of an attempt in progress.
    """

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
    # The first task seen failing (rank, status): its status is the job's, not the 143 of
    # the siblings we then stop.
    failing: tuple[int, int] | None = None
    launch_error: str | None = None
    """A start that failed but whose end could not be stored yet (the store refused)."""
    warn: tuple[int, float] | None = None
    """The job's own signal before its walltime (signal, seconds before), from its ``env``'s
    ``ORCH_SIGNAL`` (None: the daemon's, if any); read when ``warn_known``."""
    warn_known: bool = False
    warned: bool = False
    """This attempt was sent the signal before its walltime (an exit with the requeue code
    then asks to be requeued)."""

    @property
    def ntasks(self) -> int:
        return self.request.node_count * self.request.tasks_per_node


class Change:
    """The moves of one store transaction; their memory effects wait for its commit."""

    def __init__(self, table: JobTable, conn: Connection) -> None:
        self.table = table
        self.conn = conn
        self._effects: list[Callable[[], None]] = []
        # Within the transaction a job may move twice (FAILED, then PENDING for a retry):
        # these say where it stands in the transaction, memory being still unchanged.
        self._state: dict[int, JobState] = {}
        self._holds: dict[int, bool] = {}

    def add(self, job: LiveJob) -> None:
        """A job just inserted into the store (waiting)."""

        def effect() -> None:
            self.table.waiting[job.job_id] = job
            if job.state is JobState.PENDING:
                self.table.pending[job.job_id] = job
            if job.dependency:
                self.table.dependent.add(job.job_id)

        self._effects.append(effect)

    def move(
        self,
        job: LiveJob,
        new: JobState,
        reason: str,
        now: float,
        *,
        block: Block | None = None,
        drain: bool = False,
        **fields: Any,
    ) -> None:
        """Move ``job`` to ``new``: the event and row now, memory at commit.

        Args:
            block: The nodes a move to STARTING allocates.
            drain: The job ends (a finished state) while its processes may still live: it keeps
                its nodes and drains; without it, nodes are freed as the job leaves an active
                state.
            fields: Other stored columns (``end_time``, ``exit_code``, ``attempts``, ...); those
                the job mirrors are mirrored.
        """
        table, job_id = self.table, job.job_id
        old = self._state.get(job_id, job.state)
        holds = self._holds.get(job_id, job.block is not None)
        if new is JobState.STARTING:
            if block is None or holds:
                raise IllegalTransitionError(f"job {job_id} starts without its own new nodes")
            nodes = [int(n) for n in block.nodes]
            if not table.can_hold(block):  # the core never does this; refuse to share
                raise IllegalTransitionError(f"job {job_id} was given nodes already held")
        table.store.transition(self.conn, job_id, old, new, reason, now, **fields)
        if new is JobState.STARTING:
            assert block is not None
            table.store.allocate(
                self.conn,
                table.cluster_id,
                job_id,
                int(fields.get("attempts", job.attempts)),
                nodes,
                [table.topology.node_name(n) for n in nodes],
                now,
                None
                if block.shares is None
                else [(share.cpus, share.gpus, share.mem_mb) for share in block.shares],
            )
        release = holds and new not in ACTIVE and not drain
        if release:
            table.store.release(self.conn, job_id, now)
        self._state[job_id] = new
        self._holds[job_id] = (holds and not release) or new is JobState.STARTING

        self._effects.append(
            functools.partial(_mirror_move, table, job, new, fields, block, drain, release)
        )

    def drained(self, job: LiveJob, now: float) -> None:
        """A draining (or finished) job's processes are gone: free its nodes."""
        self.table.store.release(self.conn, job.job_id, now)

        def effect() -> None:
            self.table.draining.pop(job.job_id, None)
            self.table.finished[job.job_id] = job.state
            self.table.free_block(job)

        self._effects.append(effect)

    def after(self, effect: Callable[[], None]) -> None:
        """A memory effect of the caller's own, applied at commit with the others."""
        self._effects.append(effect)

    def commit(self) -> None:
        for effect in self._effects:
            effect()


class JobTable:
    """The live jobs (waiting, active, draining), the finished states seen, and the free nodes.

    Args:
        store: The job store (the daemon is its only writer).
        cluster_id: The cluster's id in the store.
        topology: The cluster's topology (node count and names).
        pool: On a cluster that shares nodes, its nodes' cores, GPUs and memory (None: jobs
            hold whole nodes).
    """

    def __init__(
        self, store: Store, cluster_id: int, topology: BaseTopology, pool: NodePool | None = None
    ) -> None:
        self.store = store
        self.cluster_id = cluster_id
        self.topology = topology
        self.pool = pool
        self.shares: FreeShares | None = FreeShares(pool) if pool is not None else None
        """What is free on each node of a cluster that shares nodes (``free`` then marks the
        nodes no job holds any of)."""
        self.waiting: dict[int, LiveJob] = {}
        """PENDING and HELD jobs."""
        self.pending: dict[int, LiveJob] = {}
        """The PENDING ones, in the same order: a scheduling pass looks at these only (a queue
        of 100,000 held jobs costs it nothing)."""
        self.active: dict[int, LiveJob] = {}
        """STARTING and RUNNING jobs (they hold nodes)."""
        self.draining: dict[int, LiveJob] = {}
        """Ended jobs whose processes may still live (they hold nodes)."""
        self.finished: dict[int, JobState] = {}
        """End states seen (dependencies look them up here first)."""
        self.dependent: set[int] = set()
        """Waiting jobs whose dependencies are not settled yet."""
        self.free: npt.NDArray[np.bool_] = np.ones(topology.size, dtype=bool)
        self.dirty = True
        """Something changed since the last scheduling pass."""
        self.fault: str | None = None
        """Why the store refuses writes (None: it takes them)."""

    @contextmanager
    def change(self) -> Iterator[Change]:
        """One transaction of moves; memory follows only if it commits.

        Raises:
            StoreUnavailableError: the store refused the write; memory is unchanged.
        """
        try:
            with self.store.write() as conn:
                change = Change(self, conn)
                yield change
        except StoreUnavailableError as e:
            if self.fault != e.cause:
                # Once per condition, not once per tick.
                log.error("%s; changes are refused until it takes writes again", e)
            self.fault = e.cause
            raise
        if self.fault is not None:
            log.warning("the job store takes writes again (it had failed: %s)", self.fault)
            self.fault = None
        change.commit()
        self.dirty = True

    def move(self, job: LiveJob, new: JobState, reason: str, now: float, **fields: Any) -> None:
        """One move in a transaction of its own (see :meth:`Change.move`)."""
        with self.change() as change:
            change.move(job, new, reason, now, **fields)

    def free_block(self, job: LiveJob) -> None:
        if job.block is not None:
            self.release(job.block)
            job.block = None

    def can_hold(self, block: Block) -> bool:
        """Nothing of ``block`` is held."""
        if self.shares is not None:
            return self.shares.can_take(block)
        return bool(self.free[block.nodes].all())

    def hold(self, block: Block) -> None:
        self.free[block.nodes] = False
        if self.shares is not None:
            self.shares.take(block)

    def release(self, block: Block) -> None:
        nodes = block.nodes
        if self.shares is None:
            self.free[nodes] = True
        else:
            self.shares.give(block)
            self.free[nodes] = self.shares.idle_at(nodes)

    def clear(self) -> None:
        """Forget everything (before recovery rebuilds it from the store)."""
        self.waiting.clear()
        self.pending.clear()
        self.active.clear()
        self.draining.clear()
        self.finished.clear()
        self.dependent.clear()
        self.free[:] = True
        if self.pool is not None:
            self.shares = FreeShares(self.pool)
        self.dirty = True

    def wait(self, job: LiveJob) -> None:
        """Put a waiting job read back from the store (recovery) in the queue."""
        self.waiting[job.job_id] = job
        if job.state is JobState.PENDING:
            self.pending[job.job_id] = job

    def get(self, job_id: int) -> LiveJob | None:
        """A waiting or active job."""
        return self.waiting.get(job_id) or self.active.get(job_id)

    def holders(self) -> Iterator[LiveJob]:
        """Every job holding nodes (active and draining)."""
        yield from self.active.values()
        yield from self.draining.values()


def _mirror_move(
    table: JobTable,
    job: LiveJob,
    new: JobState,
    fields: dict[str, Any],
    block: Block | None,
    drain: bool,
    release: bool,
) -> None:
    """The memory side of :meth:`Change.move`, run once its transaction has committed."""
    job_id = job.job_id
    job.state = new
    for name in _MIRRORED:
        if name in fields:
            value = fields[name]
            if name == "start_time" and value is None:
                value = math.nan
            setattr(job, name, value)
    table.waiting.pop(job_id, None)
    table.pending.pop(job_id, None)
    table.active.pop(job_id, None)
    if new in WAITING:
        table.waiting[job_id] = job
        if new is JobState.PENDING:
            table.pending[job_id] = job
        if job.dependency:
            table.dependent.add(job_id)
        job.handle, job.kill_at, job.killed, job.failing = None, None, False, None
        job.launch_error, job.warned = None, False
    elif new in ACTIVE:
        table.active[job_id] = job
        table.dependent.discard(job_id)
    else:
        table.dependent.discard(job_id)
        if drain and job.block is not None:
            table.draining[job_id] = job
        else:
            table.finished[job_id] = new
    if new is JobState.STARTING:
        assert block is not None
        job.block = block
        table.hold(block)
    elif release:
        table.free_block(job)
