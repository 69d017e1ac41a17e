"""Deterministic simulation testing of the daemon: its real tick, store and recovery against a
simulated world (:mod:`sim_world`) with injected faults, in virtual time.

Two kinds of tests:

* Examples, each a few milliseconds: a retried job gives its nodes back, walltime SIGTERM then
  SIGKILL after the grace, cancel drains then frees, an array's limit, a dependency that can
  never hold, a crash between launching an attempt and recording it RUNNING (its tasks done,
  or still running), a dependent job requeued after a daemon restart, a store fault inside a
  tick and inside an action.
* :class:`DaemonSimulation`, a hypothesis ``RuleBasedStateMachine``: random programs of submit
  (single jobs with plans, arrays with limits, dependencies, retries, walltimes, held), cancel,
  hold/release, the API's views, ticks (short, long, exactly at the next deadline), node
  down/up, store faults, crash-restart and crash during a start. After every step it checks:
  each node held by at most one job (memory and store); free plus held nodes are the cluster;
  memory equals the store (after every recovery, and after every step while no store fault is
  pending); the world's checks (no attempt started twice, never two live attempts of one job,
  no node shared, no start on a down node, no rerun after a success); every live simulated
  task runs on nodes the daemon holds for its job; a failed action leaves memory as it was; a
  tick never raises; a fitting pending job on an idle cluster starts within one tick. At the
  end the world drains (faults off, nodes up, held jobs released, time advancing) and every
  job must reach a terminal state within a bounded number of ticks (else it is reported
  "stuck") with no node held.

CI runs :data:`CI_EXAMPLES` programs of up to :data:`CI_STEPS` steps (about 40,000 steps) with
a fixed seed (``derandomize``): about 45 s on the project's 2-core machine (~23 ms a program:
the daemon's real store writes dominate). Before a release, run the long profile,
:data:`RELEASE_EXAMPLES` programs of up to :data:`RELEASE_STEPS` steps, new ones each run (about
50 ms a program there: 40 minutes)::

    ORCH_SIM_PROFILE=release .venv/bin/pytest -q tests/daemon/test_daemon_simulation.py \\
        -k DaemonSimulation --hypothesis-seed=$RANDOM

The harness, its checks and the machine take the cluster as a parameter
(:class:`Harness`'s ``cluster``, :attr:`DaemonSimulation.cluster`):
:mod:`test_daemon_simulation_shared` runs them on a cluster that shares nodes, where the checks
of whole nodes become checks of cores, GPUs and memory per node (:func:`check_shares`).

``--hypothesis-seed=N`` repeats a run. ``ORCH_SIM_EXAMPLES`` and ``ORCH_SIM_STEPS`` override
either profile's numbers (``ORCH_SIM_EXAMPLES=200`` for a quick local run). A failure prints the
shrunk program, step by step: turn it into an example test here before fixing the daemon.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import astuple
from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
)
from sim_world import (
    DATABASE_LOCKED,
    DISK_FULL,
    FaultyStore,
    SimBackend,
    SimCrash,
    SimWorld,
    StoreFactory,
)
from sqlalchemy.exc import OperationalError

from orchestrator import exceptions
from orchestrator.daemon.service import Daemon, DaemonConfig
from orchestrator.daemon.spec import JobSpec, parse_dependency
from orchestrator.exceptions import JobNotFoundError, JobStateError, StoreError
from orchestrator.resources.cluster import Cluster, load_cluster
from orchestrator.resources.shares import NodePool
from orchestrator.resources.topology import Block, NodeShare
from orchestrator.scheduling.job import JobState
from orchestrator.store.store import HeldShare

S = JobState
T = TypeVar("T")

CLUSTER: Cluster = load_cluster("local")  # 4 flat nodes: node0..node3
"""The whole-node cluster of this file's tests (:mod:`test_daemon_simulation_shared` drives the
same harness on a cluster that shares nodes)."""
NODES = CLUSTER.topology.node_names
CONFIG = DaemonConfig(grace_s=2.0, retry_backoff_s=1.0)
LIVE_STATES = [s.value for s in (S.PENDING, S.HELD, S.STARTING, S.RUNNING)]

# The contract: on a store fault the daemon's public methods raise StoreUnavailableError (a
# StoreError). Code without it raises SQLAlchemy's own error: accepted, so the rest is tested.
_UNAVAILABLE: type[Exception] | None = getattr(exceptions, "StoreUnavailableError", None)
ACTION_STORE_ERRORS: tuple[type[Exception], ...] = (
    (_UNAVAILABLE,) if _UNAVAILABLE is not None else (StoreError, OperationalError)
)
"""What submit/cancel/hold/release may raise on a store fault."""
STORE_ERRORS: tuple[type[Exception], ...] = (StoreError, OperationalError)
"""What building a daemon or recovering may raise on a store fault (then retried)."""


class Row(NamedTuple):
    """What the checks read of a stored job."""

    state: str
    attempts: int
    not_before: float
    nodes: int | None
    dependency: str | None


DRAIN_TICKS = 300
"""Ticks of :data:`DRAIN_DT` virtual seconds in which a drained world must settle."""
DRAIN_DT = 10.0
STUCK_TICKS = 30
"""Ticks without any change (no task alive, no start, no state change) that mean stuck."""
RECOVERY_TRIES = 20


# -- the harness: a world, a store, a daemon ----------------------------------------------------


HeldRows = dict[int, list[tuple[int, HeldShare | None]]]
"""The store's allocations not released: job id -> [(node index, share or None: whole node)]."""


class _StoreView(NamedTuple):
    version: int
    rows: dict[int, Row]
    held: dict[int, list[int]]
    shares: HeldRows


class Harness:
    """One simulated cluster with its daemon: what both the examples and the machine drive.

    Args:
        config: The daemon's configuration.
        cluster: The simulated cluster; one that shares nodes (``shared: true``) gets the
            checks of cores, GPUs and memory per node instead of whole nodes.
    """

    def __init__(self, config: DaemonConfig = CONFIG, cluster: Cluster = CLUSTER) -> None:
        self.config = config
        self.cluster = cluster
        self.nodes: tuple[str, ...] = cluster.topology.node_names
        self.pool: NodePool | None = NodePool.of(cluster) if cluster.shared else None
        """What each node has (a cluster that shares nodes only)."""
        self.world = SimWorld(self.nodes, shared=cluster.shared)
        # One store for the whole run, emptied for each harness (a new one costs ~3 ms).
        self.store: FaultyStore = StoreFactory.shared()
        self.db = self.store.reader
        self._read: _StoreView | None = None
        self.submitted: dict[int, dict[str, Any]] = {}
        """What each job was submitted with (the checks derive what it must hold from it)."""
        self.daemon = self.new_daemon()
        self.crashes = 0

    def new_daemon(self) -> Daemon:
        """A daemon over the same store and world (a new process after a crash)."""
        return Daemon(
            self.store, self.cluster, SimBackend(self.world), self.config, clock=self.world.clock
        )

    def close(self) -> None:
        """Let the next harness have the store (it empties it)."""
        self.store.disarm()

    # -- the store as the checks read it ----------------------------------------------------

    def rows(self) -> dict[int, Row]:
        """Every stored job: id -> (state, attempts, not_before, nodes, dependency)."""
        return self._store_now().rows

    def held(self) -> dict[int, list[int]]:
        """The store's held nodes: job id -> node indices (as :meth:`Store.held_nodes`)."""
        return self._store_now().held

    def held_shares(self) -> HeldRows:
        """The store's held nodes with what is held of each (as :meth:`Store.held_shares`)."""
        return self._store_now().shares

    def _store_now(self) -> _StoreView:
        # SQLite's data_version changes whenever another connection commits: read the tables
        # again only then.
        (version,) = self.db.execute("PRAGMA data_version").fetchone()
        if self._read is not None and self._read.version == version:
            return self._read
        query = "SELECT id, state, attempts, not_before, nodes, dependency FROM jobs"
        rows = {r[0]: Row(*r[1:]) for r in self.db.execute(query)}
        held: dict[int, list[int]] = {}
        shares: HeldRows = {}
        query = (
            "SELECT job_id, node_index, cpus, gpus, mem_mb FROM allocations WHERE cluster_id = ? "
            "AND released_at IS NULL ORDER BY node_index"
        )
        for job_id, node, cpus, gpus, mem in self.db.execute(query, (self.daemon.cluster_id,)):
            held.setdefault(job_id, []).append(node)
            share = None
            if cpus is not None:
                share = (_indices(cpus), _indices(gpus or ""), int(mem or 0))
            shares.setdefault(job_id, []).append((node, share))
        self._read = _StoreView(version, rows, held, shares)
        return self._read

    # -- actions --------------------------------------------------------------------------

    def submit(self, plan: str = "ok:1", **fields: Any) -> list[int]:
        """Submit one job (or array) whose simulated tasks follow ``plan``; returns its ids."""
        return self.submit_batch([(plan, fields)])[0]

    def submit_batch(self, jobs: Sequence[tuple[str, dict[str, Any]]]) -> list[list[int]]:
        """Submit several jobs (plan, fields) in one batch (all or none); their ids."""
        payloads = [{"argv": ["sim"], "nodes": 1, "env": {"SIM": plan}, **f} for plan, f in jobs]
        ids = self.daemon.submit([JobSpec.from_mapping(payload) for payload in payloads])
        for payload, group in zip(payloads, ids, strict=True):
            for job_id in group:
                self.submitted[job_id] = payload
        return ids

    def tick(self, dt: float = 0.0) -> None:
        self.world.advance(dt)
        self.daemon.tick(self.world.now)

    def crash(self, dt: float = 0.0) -> None:
        """Throw the daemon away, let ``dt`` virtual seconds pass (the simulated tasks run on),
        and recover a new one from the store; a store fault is retried (each try spends it)."""
        self.crashes += 1
        self.world.advance(dt)
        for _ in range(RECOVERY_TRIES):
            try:
                daemon = self.new_daemon()
                daemon.recover(self.world.now)
            except STORE_ERRORS:
                continue
            self.daemon = daemon
            # Recovery rebuilt memory from the store: it must equal it, fault or not.
            check_mirror(self)
            return
        raise AssertionError(f"recovery still fails after {RECOVERY_TRIES} tries")

    def state(self, job_id: int) -> JobState:
        return JobState(self.store.get_job(job_id)["state"])

    def states(self) -> dict[int, JobState]:
        return {job_id: JobState(row.state) for job_id, row in self.rows().items()}

    def check(self) -> None:
        """Every invariant that holds after any step."""
        check_world(self)
        check_nodes(self)
        check_tasks_held(self)
        if not self.store.armed and not getattr(self.daemon, "store_fault", None):
            check_mirror(self)

    def drain(self, ticks: int = DRAIN_TICKS, dt: float = DRAIN_DT) -> None:
        """Stop making trouble and let the world run dry; every job must end, no node held."""
        self.store.disarm()
        self.world.crash_after_launch = 0
        for node in list(self.world.down):
            self.world.node_up(node)
        self.tick()  # a tick that had a store fault retries what it could not record
        for job_id, state in self.states().items():
            if state is S.HELD:
                self.daemon.release(job_id)
        still, last, ran = 0, None, 0
        while ran < ticks:
            ran += 1
            self.tick(dt)
            self.check()
            if self.settled():
                break
            # Nothing runs, nothing changes for a long while (far past any backoff): stuck.
            now = (self.states(), len(self.world.start_calls), len(self.world.live_attempts()))
            still = still + 1 if now == last and not now[2] else 0
            last = now
            if still >= STUCK_TICKS:
                break
        stuck = {j: s.value for j, s in self.states().items() if not s.is_finished}
        why = f"nothing changed in the last {still}" if still >= STUCK_TICKS else "not settled"
        assert not stuck, f"stuck: {stuck} after {ran} ticks of {dt:g} s ({why})"
        held = self.held()
        assert not held, f"nodes still held after the drain: {held}"
        assert self.daemon.free.all(), f"nodes not free in memory: {self.daemon.free}"
        check_all_free(self)
        assert not self.world.live_attempts(), "simulated tasks still run"

    def settled(self) -> bool:
        d = self.daemon
        if d.waiting or d.active or d.draining or self.world.live_attempts():
            return False
        return all(s.is_finished for s in self.states().values())


# -- the invariants ---------------------------------------------------------------------------


def check_world(h: Harness) -> None:
    """The world's own checks: attempts started once, in order, never a rerun after success,
    no node shared, no start on a down node."""
    assert not h.world.violations, "\n".join(h.world.violations)


def _indices(text: str) -> tuple[int, ...]:
    """Stored indices ("0,1,2") as a tuple."""
    return tuple(int(v) for v in text.split(",") if v)


def check_nodes(h: Harness) -> None:
    """Each node is held by at most one job (memory and store); free + held = the cluster.
    On a cluster that shares nodes: :func:`check_shares` instead."""
    if h.cluster.shared:
        check_shares(h)
        return
    d = h.daemon
    size, names = h.cluster.size, h.nodes
    held = np.zeros(size, dtype=np.int64)
    for job in (*d.active.values(), *d.draining.values()):
        if job.block is not None:
            np.add.at(held, np.asarray(job.block.nodes, dtype=np.int64), 1)
    assert held.max(initial=0) <= 1, f"a node held twice in memory: {d.node_owners()}"
    free = np.asarray(d.free, dtype=bool)
    leaked = [names[i] for i in range(size) if not free[i] and not held[i]]
    shared = [names[i] for i in range(size) if free[i] and held[i]]
    assert not leaked, f"nodes neither free nor held by a job (leaked): {leaked}"
    assert not shared, f"nodes free while a job holds them: {shared}"
    seen: dict[int, int] = {}
    for job_id, nodes in h.held().items():
        for n in nodes:
            assert n not in seen, f"node {n} held by jobs {seen[n]} and {job_id} in the store"
            seen[n] = job_id
    # Whole nodes only: no share of a node in memory or in the store.
    assert not any(j.block is not None and j.block.shares for j in d.table.holders())
    parts = {j: rows for j, rows in h.held_shares().items() if any(s for _, s in rows)}
    assert not parts, f"shares of nodes held on a whole-node cluster: {parts}"


def check_tasks_held(h: Harness) -> None:
    """Every live simulated task runs on a node the daemon holds, in memory, for that job and
    attempt (else another job may be given the node its processes still use)."""
    d = h.daemon
    for attempt in h.world.live_attempts():
        job = d.active.get(attempt.job_id) or d.draining.get(attempt.job_id)
        assert job is not None, (
            f"job {attempt.job_id} attempt {attempt.attempt} still runs in the world but the "
            "daemon neither runs nor drains it"
        )
        assert job.attempts == attempt.attempt, (
            f"job {attempt.job_id}: attempt {attempt.attempt} runs, memory says {job.attempts}"
        )
        held = {h.nodes[int(n)] for n in job.block.nodes} if job.block is not None else set()
        running = {t.node for t in attempt.tasks if t.alive}
        assert running <= held, f"job {attempt.job_id} runs on {running}, holds only {held}"
        if h.pool is not None and job.block is not None:
            # It runs on the very GPUs and cores the daemon holds for it there.
            for node, share in zip(job.block.nodes.tolist(), shares_of(h, job.block), strict=True):
                name = h.nodes[node]
                if name not in running:
                    continue
                assert attempt.node_gpus.get(name, ()) == share.gpus, (
                    f"job {attempt.job_id} runs on GPUs {attempt.node_gpus.get(name)} of {name}, "
                    f"holds {share.gpus}"
                )
                if attempt.whole:
                    assert share == h.pool.whole(node), (
                        f"job {attempt.job_id} runs exclusively on {name}, holds only {share}"
                    )
                else:
                    assert attempt.node_cpus.get(name) == share.cpus, (
                        f"job {attempt.job_id} runs on cores {attempt.node_cpus.get(name)} of "
                        f"{name}, holds {share.cpus}"
                    )


def check_mirror(h: Harness) -> None:
    """Memory equals the store: live rows are waiting or active with the same state and
    attempts, finished rows still holding nodes drain, and the nodes held agree."""
    d = h.daemon
    rows = {job_id: row for job_id, row in h.rows().items() if row.state in LIVE_STATES}
    held = h.held()
    mem_live = {**d.waiting, **d.active}
    assert set(mem_live) == set(rows), (
        f"live jobs: memory {sorted(mem_live)} != store {sorted(rows)}"
    )
    for job_id, row in rows.items():
        state = JobState(row.state)
        job = (d.waiting if state.is_waiting else d.active).get(job_id)
        assert job is not None, f"job {job_id} is {state} in the store, elsewhere in memory"
        assert job.state is state, f"job {job_id}: memory {job.state}, store {state}"
        assert job.attempts == row.attempts, (
            f"job {job_id}: memory attempt {job.attempts}, store {row.attempts}"
        )
    pending = [job_id for job_id, job in d.waiting.items() if job.state is JobState.PENDING]
    assert list(d.table.pending) == pending, (
        f"pending index {list(d.table.pending)} != pending waiting jobs in order {pending}"
    )
    draining = {j for j in held if j not in rows}
    assert set(d.draining) == draining, (
        f"draining: memory {sorted(d.draining)} != finished jobs holding nodes {sorted(draining)}"
    )
    mem_held = {
        job_id: sorted(int(n) for n in job.block.nodes)
        for job_id, job in (*d.active.items(), *d.draining.items())
        if job.block is not None and len(job.block.nodes)
    }
    assert mem_held == held, f"held nodes: memory {mem_held} != store {held}"
    if h.pool is not None:
        # What is held of each node, too (a NULL share in the store is the whole node).
        pool = h.pool
        mem_shares = {
            job_id: [
                (n, (s.cpus, s.gpus, s.mem_mb))
                for n, s in zip(job.block.nodes.tolist(), shares_of(h, job.block), strict=True)
            ]
            for job_id, job in (*d.active.items(), *d.draining.items())
            if job.block is not None and len(job.block.nodes)
        }
        store_shares = {
            job_id: [
                (n, share if share is not None else astuple(pool.whole(n))) for n, share in rows
            ]
            for job_id, rows in h.held_shares().items()
        }
        assert mem_shares == store_shares, (
            f"held shares: memory {mem_shares} != store {store_shares}"
        )


# -- the invariants of a cluster that shares nodes --------------------------------------------


class Need(NamedTuple):
    """What a job must hold on each of its nodes, derived from its submission alone."""

    nodes: int
    cpus: int
    gpus: int
    mem_mb: int | None
    """None: the node's memory in proportion to the cores (Slurm's DefMemPerCPU)."""
    exclusive: bool
    partition: str


_UNITS_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def _megabytes(value: int | str) -> int:
    """Memory as a submission gives it: an int is MB, text has a unit (``2G``, ``1500M``)."""
    if isinstance(value, int):
        return value
    text = value.strip().upper().removesuffix("B")
    if text[-1:] in _UNITS_MB:
        return math.ceil(int(text[:-1]) * _UNITS_MB[text[-1]])
    return int(text)


def need_of(fields: dict[str, Any], cluster: Cluster | None = None) -> Need:
    """What a submission asks for per node, as Slurm reads it: ``gpus_per_node``, ``gres``
    (``gpu[:TYPE]:N``) or ``gpus`` (in all, over the nodes), at least ``tasks_per_node *
    gpus_per_task``; memory from ``mem_per_node_mb``, ``mem`` or ``mem_per_gpu`` times the
    GPUs. A ``resource_type`` ``NAME=N`` of ``cluster``: N nodes of one unit each."""
    if fields.get("resource_type") and cluster is not None:
        name, _, count = str(fields["resource_type"]).partition("=")
        unit = cluster.resource_types[name]
        nodes = int(count or 1)
        if unit.exclusive:
            return Need(nodes, 1, 0, None, True, "")
        return Need(nodes, unit.cpus, unit.gpus, unit.memory_mb or None, False, "")
    nodes = int(fields.get("nodes") or 1)
    tpn = int(fields.get("tasks_per_node") or 1)
    cpus = tpn * int(fields.get("cpus_per_task") or 1)
    gpus = int(fields.get("gpus_per_node") or 0)
    if fields.get("gres"):
        gpus = int(str(fields["gres"]).rsplit(":", 1)[1])
    if fields.get("gpus"):
        gpus = int(fields["gpus"]) // nodes
    gpus = max(gpus, tpn * int(fields.get("gpus_per_task") or 0))
    mem: int | None = None
    if fields.get("mem_per_node_mb"):
        mem = int(fields["mem_per_node_mb"])
    if fields.get("mem"):
        mem = _megabytes(fields["mem"])
    if fields.get("mem_per_gpu"):
        mem = _megabytes(fields["mem_per_gpu"]) * gpus
    return Need(
        nodes, cpus, gpus, mem, bool(fields.get("exclusive")), str(fields.get("partition") or "")
    )


def shares_of(h: Harness, block: Block) -> tuple[NodeShare, ...]:
    """What ``block`` holds of each of its nodes (whole nodes where it says none)."""
    assert h.pool is not None
    if block.shares is not None:
        return block.shares
    return tuple(h.pool.whole(int(n)) for n in block.nodes)


def check_holds_what_it_asked(h: Harness, job_id: int, block: Block) -> None:
    """A job holds exactly what its submission asked for on each node of its partition: so
    many distinct cores, GPUs and MB (an exclusive job: every core, GPU and MB)."""
    assert h.pool is not None
    fields = h.submitted.get(job_id)
    if fields is None:
        return  # submitted behind the harness's back
    need = need_of(fields, h.cluster)
    nodes = block.nodes.tolist()
    assert len(nodes) == need.nodes, f"job {job_id} asked for {need.nodes} nodes, holds {nodes}"
    assert block.shares is not None, f"job {job_id} holds {nodes} without shares"
    group = h.cluster.group(need.partition)
    assert set(nodes) <= set(group.nodes.tolist()), (
        f"job {job_id} of partition {need.partition!r} holds {nodes}"
    )
    for node, share in zip(nodes, block.shares, strict=True):
        whole = h.pool.whole(node)
        if need.exclusive:
            assert share == whole, f"job {job_id} (exclusive) holds only {share} of node {node}"
            continue
        mem = need.mem_mb
        if mem is None:
            mem = math.ceil(group.node.memory_mb * need.cpus / group.node.cpus)
        got = (len(set(share.cpus)), len(set(share.gpus)), share.mem_mb)
        assert got == (need.cpus, need.gpus, mem), (
            f"job {job_id} asked for {need.cpus} cores, {need.gpus} GPUs, {mem} MB a node; "
            f"holds {share} of node {node}"
        )
        assert (len(share.cpus), len(share.gpus)) == (got[0], got[1]), (
            f"job {job_id} holds an index twice: {share}"
        )
        assert set(share.cpus) <= set(whole.cpus) and set(share.gpus) <= set(whole.gpus), (
            f"job {job_id} holds {share} of node {node}, which has {whole}"
        )


class Ledger:
    """Who holds each core and GPU of each node, and the memory held: a double hold fails."""

    def __init__(self, h: Harness, where: str) -> None:
        assert h.pool is not None
        self.pool = h.pool
        self.names = h.nodes
        self.where = where
        size = h.cluster.size
        self.cores: list[dict[int, int]] = [{} for _ in range(size)]
        self.gpus: list[dict[int, int]] = [{} for _ in range(size)]
        self.mem = [0] * size

    def hold(self, job_id: int, node: int, share: NodeShare) -> None:
        name = self.names[node]
        for kind, owners, indices in (
            ("core", self.cores[node], share.cpus),
            ("GPU", self.gpus[node], share.gpus),
        ):
            for i in indices:
                other = owners.setdefault(i, job_id)
                assert other == job_id, (
                    f"{kind} {i} of {name} held by jobs {other} and {job_id} ({self.where})"
                )
        self.mem[node] += share.mem_mb
        assert self.mem[node] <= self.pool.mem[node], (
            f"{name}: {self.mem[node]} MB held > {self.pool.mem[node]} MB ({self.where})"
        )


def check_shares(h: Harness) -> None:
    """A cluster that shares nodes: no core and no GPU of a node held by two jobs, no node's
    memory overcommitted (memory: the active and draining jobs' blocks; store: the allocation
    rows not released); each job holds exactly what it asked for; the table's free shares
    are the nodes' totals less what the jobs hold, and its free mask marks exactly the nodes
    nothing is held of."""
    d, pool = h.daemon, h.pool
    assert pool is not None and d.table.shares is not None
    ledger = Ledger(h, "memory")
    for job in (*d.active.values(), *d.draining.values()):
        if job.block is None:
            continue
        check_holds_what_it_asked(h, job.job_id, job.block)
        for node, share in zip(job.block.nodes.tolist(), shares_of(h, job.block), strict=True):
            ledger.hold(job.job_id, node, share)
    free = d.table.shares
    for node in range(h.cluster.size):
        name = h.nodes[node]
        cores = ((1 << int(pool.cpus[node])) - 1) & ~_bits(ledger.cores[node])
        gpus = ((1 << int(pool.gpus[node])) - 1) & ~_bits(ledger.gpus[node])
        mem = int(pool.mem[node]) - ledger.mem[node]
        want = (cores, cores.bit_count(), gpus, gpus.bit_count(), mem)
        got = (
            free.cores[node],
            int(free.n_cores[node]),
            free.gpu_masks[node],
            int(free.n_gpus[node]),
            int(free.mem[node]),
        )
        assert got == want, (
            f"{name}: free in memory (cores, n, GPUs, n, MB) {got} != node less the jobs' "
            f"holds {want}"
        )
        idle = not ledger.cores[node] and not ledger.gpus[node] and not ledger.mem[node]
        assert bool(d.free[node]) == idle, (
            f"{name}: free mask says {bool(d.free[node])}, held of it: cores "
            f"{ledger.cores[node]}, GPUs {ledger.gpus[node]}, {ledger.mem[node]} MB"
        )
    stored = Ledger(h, "store")
    for job_id, rows in h.held_shares().items():
        for node, held in rows:
            share = NodeShare(*held) if held is not None else pool.whole(node)
            stored.hold(job_id, node, share)


def _bits(indices: Iterable[int]) -> int:
    mask = 0
    for i in indices:
        mask |= 1 << i
    return mask


def check_all_free(h: Harness) -> None:
    """Nothing held: on a cluster that shares nodes, every core, GPU and MB is free."""
    shares = h.daemon.table.shares
    if shares is None or h.pool is None:
        return
    pool = h.pool
    for node in range(h.cluster.size):
        whole = pool.whole(node)
        got = (shares.cores[node], shares.gpu_masks[node], int(shares.mem[node]))
        want = (_bits(whole.cpus), _bits(whole.gpus), whole.mem_mb)
        assert got == want, f"{h.nodes[node]}: free (cores, GPUs, MB) {got}, not all {want}"


def dependencies_hold(row: Row, states: dict[int, JobState]) -> bool:
    """Every dependency of a stored job is settled and satisfied."""
    for kind, dep in parse_dependency(row.dependency) if row.dependency else ():
        state = states.get(dep, S.CANCELLED)
        if not state.is_finished:
            return False
        ok = state is S.COMPLETED
        if (kind == "afterok" and not ok) or (kind == "afternotok" and ok):
            return False
    return True


def startable_on_idle_cluster(h: Harness) -> list[int]:
    """Pending jobs that must start at the next tick: nothing runs or drains, no node is down
    (nor came back up since the daemon's last periodic pass, which is when it asks the backend
    again), no store fault is pending, and they fit, wait for no dependency, backoff or array
    slot."""
    d = h.daemon
    if d.active or d.draining or h.world.down or h.world.live_attempts():
        return []
    if h.world.now < h.world.nodes_changed_at + d.config.reschedule_s:
        return []
    if h.store.armed or getattr(d, "store_fault", None):
        return []
    rows = h.rows()
    states = {job_id: JobState(row.state) for job_id, row in rows.items()}
    return [
        job_id
        for job_id, row in rows.items()
        if row.state == S.PENDING.value
        and row.not_before <= h.world.now
        and (row.nodes or 0) <= h.cluster.size
        and dependencies_hold(row, states)
    ]


def next_event_in(h: Harness) -> float:
    """Seconds until the next thing due in the world or the daemon (0 if nothing is)."""
    d, now = h.daemon, h.world.now
    due = [t.end_at for a in h.world.live_attempts() for t in a.tasks if t.alive]
    for job in (*d.active.values(), *d.draining.values()):
        if job.kill_at is not None:
            due.append(job.kill_at)
        if job.request.walltime_s is not None and job.job_id in d.active:
            due.append(job.start_time + job.request.walltime_s)
    due += [job.not_before for job in d.waiting.values()]
    return min((t - now for t in due if t > now), default=0.0)


# -- examples ---------------------------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.close()


def test_bug1_retried_job_gives_its_nodes_back(sim: Harness) -> None:
    """A job that fails and is requeued by its retry policy frees its nodes at once: another
    job waiting for the whole cluster starts in the same tick (not both PENDING forever)."""
    (first,) = sim.submit("fail:1:3", nodes=4, retries=1)
    (second,) = sim.submit("ok:1", nodes=4)
    sim.tick()
    assert sim.state(first) is S.RUNNING
    sim.tick(1.0)  # rank 0 fails: the daemon stops the other ranks (SIGTERM)
    sim.tick()  # the attempt ended: requeued for a retry in 1 s; the second takes the nodes
    assert sim.state(second) is S.RUNNING, (
        f"{sim.state(first)}/{sim.state(second)} ({sim.daemon.pending_reason(second)}), "
        f"free nodes in memory {sim.daemon.free}"
    )
    check_nodes(sim)
    sim.drain()
    assert sim.states() == {first: S.FAILED, second: S.COMPLETED}
    assert [a.attempt for a in sim.world.launches_of(first)] == [1, 2]


def test_retry_then_success_frees_nodes(sim: Harness) -> None:
    (job,) = sim.submit("fail:1:2;ok:1", nodes=2, retries=1)
    sim.tick()
    sim.tick(1.0)  # rank 0 of attempt 1 fails: the other rank is stopped
    sim.tick()  # attempt 1 ended: requeued, backoff 1 s
    check_nodes(sim)
    assert sim.state(job) is S.PENDING and sim.daemon.free.all()
    sim.tick(0.5)
    assert sim.state(job) is S.PENDING  # still in its backoff
    sim.tick(0.5)
    assert sim.state(job) is S.RUNNING
    sim.tick(1.0)
    assert sim.state(job) is S.COMPLETED
    sim.check()
    assert sim.daemon.free.all() and not sim.store.held_nodes(sim.daemon.cluster_id)
    assert sim.store.get_job(job)["attempts"] == 2


def test_walltime_sigterm_then_sigkill_after_grace(sim: Harness) -> None:
    (job,) = sim.submit("ok:100+stubborn", time=5)
    sim.tick()
    sim.tick(4.9)
    assert sim.state(job) is S.RUNNING
    sim.tick(0.2)  # walltime: SIGTERM (ignored), the node stays held through the grace
    assert sim.state(job) is S.TIMEOUT
    assert job in sim.daemon.draining and not sim.daemon.free[0]
    sim.tick(1.0)
    assert job in sim.daemon.draining
    sim.tick(1.5)  # past the 2 s grace: SIGKILL
    sim.tick()  # the poll sees it gone: nodes freed
    assert job not in sim.daemon.draining and sim.daemon.free.all()
    sim.check()
    (attempt,) = sim.world.launches_of(job)
    first_time, first_signal = attempt.signals[0]
    assert first_time == pytest.approx(1_005.1) and first_signal == signal.SIGTERM
    assert {s for _, s in attempt.signals} == {signal.SIGTERM, signal.SIGKILL}
    assert attempt.tasks[0].status == 128 + signal.SIGKILL
    assert "walltime 5s reached" in sim.store.events_of(job)[-1]["reason"]


def test_cancel_running_job_drains_then_frees(sim: Harness) -> None:
    (polite,) = sim.submit("ok:100", nodes=2)
    (stubborn,) = sim.submit("ok:100+stubborn", nodes=2)
    sim.tick()
    assert sim.daemon.cancel(polite) is S.CANCELLED
    assert sim.daemon.cancel(stubborn) is S.CANCELLED
    assert set(sim.daemon.draining) == {polite, stubborn}
    assert not sim.daemon.free.any()  # both still hold their nodes
    sim.tick(0.1)  # the polite one ended on SIGTERM: freed
    assert set(sim.daemon.draining) == {stubborn}
    assert sim.daemon.free.sum() == 2
    sim.tick(2.0)  # grace over: SIGKILL
    sim.tick()
    assert not sim.daemon.draining and sim.daemon.free.all()
    sim.check()
    assert sim.world.launches_of(polite)[0].tasks[0].status == 128 + signal.SIGTERM
    assert sim.world.launches_of(stubborn)[0].tasks[0].status == 128 + signal.SIGKILL


def test_array_limit(sim: Harness) -> None:
    ids = sim.submit("ok:5", array="0-5%2")
    most = 0
    for _ in range(40):
        sim.tick(1.0)
        sim.check()
        running = sum(a.alive for a in sim.world.attempts.values())
        most = max(most, running)
        assert running <= 2
    assert most == 2
    assert all(sim.state(j) is S.COMPLETED for j in ids)


def test_dependency_that_cannot_hold_is_cancelled(sim: Harness) -> None:
    (ok,) = sim.submit("ok:1")
    (bad,) = sim.submit("fail:1:1")
    (notok,) = sim.submit("ok:1", dependency=f"afternotok:{ok}")
    (afterok,) = sim.submit("ok:1", dependency=f"afterok:{bad}")
    (anyway,) = sim.submit("ok:1", dependency=f"afterany:{bad}")
    sim.drain()
    assert sim.states() == {
        ok: S.COMPLETED,
        bad: S.FAILED,
        notok: S.CANCELLED,
        afterok: S.CANCELLED,
        anyway: S.COMPLETED,
    }
    assert "dependency never satisfied" in sim.store.get_job(notok)["reason"]
    assert not sim.world.launches_of(notok) and not sim.world.launches_of(afterok)


def test_crash_during_start_after_tasks_succeeded_is_not_rerun(sim: Harness) -> None:
    """Bug 3: the daemon dies after launching an attempt, before recording it RUNNING; by the
    time it is back every task had exited 0. Recovery records COMPLETED; nothing reruns."""
    (job,) = sim.submit("ok:1", nodes=2, tasks_per_node=2, retries=2)
    sim.world.crash_after_launch = 1
    with pytest.raises(SimCrash):
        sim.tick()
    assert sim.state(job) is S.STARTING
    sim.crash(dt=5.0)  # the tasks ended meanwhile, all with status 0
    assert sim.state(job) is S.COMPLETED, sim.store.events_of(job)[-1]["reason"]
    sim.drain()
    assert len(sim.world.launches_of(job)) == 1
    assert sim.world.launches_of(job)[0].aborted


def test_crash_during_start_with_tasks_still_running_retries(sim: Harness) -> None:
    """The same crash while the tasks still run: they are killed and the attempt retried."""
    (job,) = sim.submit("ok:10", retries=1)
    sim.world.crash_after_launch = 1
    with pytest.raises(SimCrash):
        sim.tick()
    sim.crash(dt=1.0)
    assert sim.state(job) is S.PENDING
    (first,) = sim.world.launches_of(job)
    assert first.aborted and all(t.lost for t in first.tasks)
    sim.drain()
    assert sim.state(job) is S.COMPLETED
    assert [a.attempt for a in sim.world.launches_of(job)] == [1, 2]


def test_dependent_job_requeued_by_recovery_runs_again(sim: Harness) -> None:
    """A job whose dependency held is started; the daemon dies during the start and recovery
    requeues the attempt (NODE_FAIL, retry). The retry must run: its dependency is settled,
    the job must not wait for it again (it stayed PENDING 'Dependency' forever)."""
    (first,) = sim.submit("ok:0")
    sim.tick()
    (second,) = sim.submit("ok:1", dependency=f"afterok:{first}", retries=1)
    sim.world.crash_after_launch = 1
    with pytest.raises(SimCrash):
        sim.tick()
    sim.crash()
    assert sim.state(second) is S.PENDING
    sim.drain()
    assert sim.states() == {first: S.COMPLETED, second: S.COMPLETED}


def test_dependent_job_reattached_then_retried_runs_again(sim: Harness) -> None:
    """The same for a running job re-attached by a restarted daemon that then fails: its
    retry runs (it stayed PENDING 'Dependency' forever)."""
    (first,) = sim.submit("ok:0")
    sim.tick()
    (second,) = sim.submit("fail:1:1;ok:1", dependency=f"afterok:{first}", retries=1)
    sim.tick()
    assert sim.state(second) is S.RUNNING
    sim.crash()
    sim.tick(1.0)  # attempt 1 fails: requeued for its retry
    assert sim.state(second) is S.PENDING
    sim.drain()
    assert sim.states() == {first: S.COMPLETED, second: S.COMPLETED}
    assert [a.attempt for a in sim.world.launches_of(second)] == [1, 2]


def test_store_fault_in_a_tick_is_retried(sim: Harness) -> None:
    """A write that fails inside a tick does not raise out of it and leaves memory equal to
    the store; a later tick records the job's end."""
    (job,) = sim.submit("ok:1")
    sim.tick()
    sim.store.arm(1, message=DISK_FULL)
    sim.tick(2.0)  # the job ended: recording it fails once
    assert sim.state(job) is S.RUNNING
    check_nodes(sim)
    sim.tick()
    assert sim.state(job) is S.COMPLETED
    sim.check()
    assert sim.daemon.free.all()


def test_store_fault_in_an_action_leaves_memory_unchanged(sim: Harness) -> None:
    (job,) = sim.submit("ok:1", hold=True)
    before = memory_snapshot(sim.daemon)
    sim.store.arm(1, message=DATABASE_LOCKED)
    with pytest.raises(ACTION_STORE_ERRORS):
        sim.daemon.release(job)
    assert memory_snapshot(sim.daemon) == before
    sim.check()
    sim.drain()


# -- the state machine ------------------------------------------------------------------------


def memory_snapshot(d: Daemon) -> tuple[Any, ...]:
    """What a failed action must leave as it was."""

    def jobs(m: dict[int, Any]) -> list[tuple[Any, ...]]:
        return [
            (
                i,
                j.state,
                j.attempts,
                j.not_before,
                tuple(int(n) for n in j.block.nodes) if j.block is not None else None,
                j.block.shares if j.block is not None else None,
            )
            for i, j in sorted(m.items())
        ]

    shares = d.table.shares
    free_shares = (
        None
        if shares is None
        else (
            tuple(shares.cores),
            tuple(shares.gpu_masks),
            bytes(shares.n_cores),
            bytes(shares.n_gpus),
            bytes(shares.mem),
        )
    )
    return (
        jobs(d.waiting),
        jobs(d.active),
        jobs(d.draining),
        bytes(np.asarray(d.free)),
        free_shares,
    )


OUTCOMES = (
    [f"ok:{d}" for d in range(9)]
    + [f"ok:{d}+stubborn" for d in (0, 3, 8)]
    + [f"fail:{d}:{c}" for d in range(9) for c in (1, 2)]
    + [f"fail:{d}:1+stubborn" for d in (0, 3)]
    + [f"vanish:{d}" for d in (0, 2, 5)]
    + ["startfail"]
)
"""What one attempt does (see :mod:`sim_world`); a list, so a failing program prints plainly."""
PLANS = st.lists(st.sampled_from(OUTCOMES), min_size=1, max_size=2).map(";".join)
WALLTIMES = st.one_of(st.none(), st.integers(1, 10))
HOLD = st.sampled_from([False, False, False, True])
ARRAYS = st.sampled_from([None, None, None, "0-1", "0-1%1", "0-2%1", "0-2%2", "0-2"])
"""Mostly single jobs; arrays of 2-3 elements, some with a limit of 1 or 2 at once."""
DTS = st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 5.0])


class DaemonSimulation(RuleBasedStateMachine):
    """Random programs against one daemon in a simulated world (see the module docstring)."""

    jobs = Bundle("jobs")
    cluster: ClassVar[Cluster] = CLUSTER
    """The simulated cluster (a subclass may use another and override the rules naming its
    nodes and requests)."""

    def __init__(self) -> None:
        super().__init__()
        self.h = Harness(cluster=self.cluster)

    def teardown(self) -> None:
        try:
            # Drain only after a clean run: a failure already found must not be masked.
            if sys.exc_info()[0] is None:
                self.h.drain()
        finally:
            self.h.close()

    # -- helpers --------------------------------------------------------------------------

    def _submit(self, plan: str, **fields: Any) -> Any:
        return self._submit_batch([(plan, fields)])

    def _submit_batch(self, jobs: Sequence[tuple[str, dict[str, Any]]]) -> Any:
        before = memory_snapshot(self.h.daemon)
        failed = self.h.store.failed
        try:
            ids = self.h.submit_batch(jobs)
        except ACTION_STORE_ERRORS:
            assert self.h.store.failed > failed, "a store error without a store fault"
            assert memory_snapshot(self.h.daemon) == before, "a failed submit changed memory"
            return multiple()
        return multiple(*(job_id for group in ids for job_id in group))

    def _action(self, action: Callable[[int], T], job_id: int) -> None:
        before = memory_snapshot(self.h.daemon)
        failed = self.h.store.failed
        try:
            action(job_id)
        except (JobStateError, JobNotFoundError):
            pass
        except ACTION_STORE_ERRORS:
            assert self.h.store.failed > failed, "a store error without a store fault"
            assert memory_snapshot(self.h.daemon) == before, "a failed action changed memory"

    def _tick(self, dt: float) -> None:
        """Tick; a tick must never raise (a store fault included). Then: a fitting pending
        job on an idle cluster starts (is handed to the backend) at the next tick."""
        self.h.tick(dt)
        waiting = startable_on_idle_cluster(self.h)
        if waiting:
            calls = len(self.h.world.start_calls)
            self.h.tick()
            assert len(self.h.world.start_calls) > calls, (
                f"jobs {waiting} fit the idle cluster but none started within one tick "
                f"(free: {self.h.daemon.free}); reasons: "
                f"{ {j: self.h.daemon.pending_reason(j) for j in waiting} }"
            )

    # -- submissions ----------------------------------------------------------------------

    @rule(
        target=jobs,
        plan=PLANS,
        nodes=st.integers(1, CLUSTER.size),
        tasks_per_node=st.integers(1, 2),
        retries=st.integers(0, 2),
        walltime=WALLTIMES,
        hold=HOLD,
        array=ARRAYS,
    )
    def submit(
        self,
        plan: str,
        nodes: int,
        tasks_per_node: int,
        retries: int,
        walltime: int | None,
        hold: bool,
        array: str | None,
    ) -> Any:
        """A job, or an array of jobs (``array``, with a limit of how many run at once)."""
        return self._submit(
            plan,
            nodes=nodes,
            tasks_per_node=tasks_per_node,
            retries=retries,
            time=walltime,
            hold=hold,
            array=array,
        )

    @rule(
        target=jobs,
        dep=jobs,
        kind=st.sampled_from(["afterok", "afterany", "afternotok"]),
        plan=PLANS,
        nodes=st.integers(1, CLUSTER.size),
        retries=st.integers(0, 1),
        hold=HOLD,
    )
    def submit_dependent(
        self, dep: int, kind: str, plan: str, nodes: int, retries: int, hold: bool
    ) -> Any:
        return self._submit(
            plan, nodes=nodes, dependency=f"{kind}:{dep}", retries=retries, hold=hold
        )

    # -- user actions ---------------------------------------------------------------------

    @rule(job=jobs)
    def cancel(self, job: int) -> None:
        self._action(self.h.daemon.cancel, job)

    @rule(job=jobs, release=st.booleans())
    def hold_or_release(self, job: int, release: bool) -> None:
        self._action(self.h.daemon.release if release else self.h.daemon.hold, job)

    @rule(job=jobs)
    def views(self, job: int) -> None:
        """The API's views of the daemon agree with it: a pending reason exactly for waiting
        jobs, node owners as the jobs' blocks (on a shared node, one of the jobs on it)."""
        d = self.h.daemon
        reason = d.pending_reason(job)
        assert (reason is None) == (job not in d.waiting), f"job {job}: reason {reason!r}"
        owners = d.node_owners()
        holders: dict[int, set[int]] = {}
        for holder in (*d.active.values(), *d.draining.values()):
            for n in holder.block.nodes if holder.block is not None else ():
                holders.setdefault(int(n), set()).add(holder.job_id)
        for n, owner in enumerate(owners):
            if n in holders:
                assert owner in holders[n], f"node {n}: owners {owners}, held by {holders[n]}"
            else:
                assert owner is None, f"node {n}: owners {owners}, held by no job"

    # -- time -----------------------------------------------------------------------------

    @rule(dt=DTS)
    def tick(self, dt: float) -> None:
        self._tick(dt)

    @rule(dt=st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    def tick_short(self, dt: float) -> None:
        self._tick(dt)

    @rule(dt=st.sampled_from([5.0, 10.0, 20.0]))
    def tick_long(self, dt: float) -> None:
        self._tick(dt)

    @rule(after=st.sampled_from([0.0, 0.001]))
    def tick_at_next_event(self, after: float) -> None:
        """Tick exactly at (or just after) the next thing due: a task's end, a walltime, the
        end of a grace period or of a retry backoff."""
        self._tick(next_event_in(self.h) + after)

    # -- faults ---------------------------------------------------------------------------

    @rule(node=st.sampled_from(NODES))
    def node_down_or_up(self, node: str) -> None:
        """A node goes down (its tasks are lost), or comes back up if it was down."""
        if node in self.h.world.down:
            self.h.world.node_up(node)
        else:
            self.h.world.node_down(node)

    @rule(
        count=st.integers(1, 3),
        skip=st.integers(0, 4),
        message=st.sampled_from([DISK_FULL, DATABASE_LOCKED]),
    )
    def store_fault(self, count: int, skip: int, message: str) -> None:
        self.h.store.arm(count, skip=skip, message=message)

    @rule(during_start=st.booleans(), dt=st.sampled_from([0.0, 1.0, 10.0]))
    def crash(self, during_start: bool, dt: float) -> None:
        """The daemon dies and a new one recovers from the store after ``dt`` (the simulated
        tasks run on meanwhile). ``during_start``: it dies inside a tick, in the next start,
        after the tasks were launched and before they are recorded RUNNING (no start in that
        tick: no crash)."""
        if not during_start:
            self.h.crash(dt)
            return
        self.h.world.crash_after_launch = 1
        try:
            self.h.daemon.tick(self.h.world.now)
        except SimCrash:
            self.h.crash(dt)
        finally:
            self.h.world.crash_after_launch = 0

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def consistent(self) -> None:
        self.h.check()


CI_EXAMPLES = 2_000
CI_STEPS = 20
RELEASE_EXAMPLES = 50_000
RELEASE_STEPS = 30

settings.register_profile(
    "orch-sim-ci",
    max_examples=CI_EXAMPLES,
    stateful_step_count=CI_STEPS,
    derandomize=True,  # the same programs every run: a fixed seed
    database=None,
    deadline=None,  # the time per program varies with its drain
    print_blob=False,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
settings.register_profile(
    "orch-sim-release",
    parent=settings.get_profile("orch-sim-ci"),
    max_examples=RELEASE_EXAMPLES,
    stateful_step_count=RELEASE_STEPS,
    derandomize=False,  # new programs each run (``--hypothesis-seed=N`` repeats one)
)


def chosen_settings(
    ci: tuple[int, int] = (CI_EXAMPLES, CI_STEPS),
    release: tuple[int, int] = (RELEASE_EXAMPLES, RELEASE_STEPS),
) -> settings:
    """The profile ``ORCH_SIM_PROFILE`` names (``ci``, the default, or ``release``) with its
    (examples, steps) taken from ``ci`` or ``release``, and ``ORCH_SIM_EXAMPLES`` and
    ``ORCH_SIM_STEPS`` overriding them."""
    name = os.environ.get("ORCH_SIM_PROFILE", "ci")
    if name not in ("ci", "release"):
        raise ValueError(f"ORCH_SIM_PROFILE={name!r}: expected ci or release")
    examples, steps = ci if name == "ci" else release
    return settings(
        settings.get_profile(f"orch-sim-{name}"),
        max_examples=int(os.environ.get("ORCH_SIM_EXAMPLES", examples)),
        stateful_step_count=int(os.environ.get("ORCH_SIM_STEPS", steps)),
    )


TestDaemonSimulation = DaemonSimulation.TestCase
TestDaemonSimulation.settings = chosen_settings()
