"""The scheduler core: pure and deterministic.

Given a clock value, the waiting jobs, the running jobs and the free mask,
:meth:`SchedulerCore.schedule` returns decisions (start job J on block B; reserve block B for
job K at time T). It does no I/O, reads no clock and mutates none of its inputs. The simulator
drives it with a virtual clock; the daemon drives the very same code with the wall clock.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from orchestrator.resources.request import JobRequest
from orchestrator.resources.topology import BaseTopology, Block
from orchestrator.scheduling.capacity import (
    BaseCapacity,
    CountCapacity,
    FreeResources,
    Placement,
    SharedCapacity,
    capacity_for,
)
from orchestrator.scheduling.policies import Backfill, BaseOrdering, JobLike

__all__ = ["Decisions", "Reservation", "RunningLike", "SchedulerCore", "Start"]


class RunningLike(Protocol):
    """What the scheduler needs to know of a running job."""

    @property
    def job_id(self) -> int | str: ...

    @property
    def request(self) -> JobRequest: ...

    @property
    def block(self) -> Block: ...

    @property
    def start_time(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Start:
    """Start ``job_id`` now on ``block``."""

    job_id: int | str
    block: Block


@dataclass(frozen=True, slots=True)
class Reservation:
    """``job_id`` is promised ``placement`` (a block, or a node count on a flat cluster) at
    ``start_time``; backfilled jobs must not delay it."""

    job_id: int | str
    start_time: float
    placement: Placement


@dataclass(slots=True)
class Decisions:
    """The outcome of one scheduling pass."""

    starts: list[Start] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)
    head: int | str | None = None
    """The first job in order that could not start now (None when every job started)."""


class SchedulerCore:
    """An ordering plus a backfilling mode over one cluster topology.

    Args:
        topology: The cluster's topology (flat clusters use a fast node-count model).
        ordering: Which waiting job goes first.
        backfill: How later jobs may overtake a blocked head job.
        commit_head: Once a job has been the blocked head, it stays first until it starts, even
            if the ordering would now put another job before it (RLScheduler's semantics: the
            chosen job waits for resources). The driver passes the previous pass's
            :attr:`Decisions.head` back as ``committed_head``.
    """

    def __init__(
        self,
        topology: BaseTopology,
        ordering: BaseOrdering,
        backfill: Backfill,
        *,
        commit_head: bool = False,
    ) -> None:
        self.topology = topology
        self.ordering = ordering
        self.backfill = Backfill(backfill)
        self.commit_head = commit_head
        # The last shadow computation (tree/torus only, where it costs several placement
        # queries). It is a memo, not state: every pass gets the result it would compute.
        self._shadow_memo: _ShadowMemo | None = None

    def schedule(
        self,
        now: float,
        pending: Sequence[JobLike],
        running: Sequence[RunningLike],
        free: FreeResources,
        *,
        presorted: bool = False,
        running_sorted: bool = False,
        committed_head: int | str | None = None,
    ) -> Decisions:
        """One scheduling pass.

        Args:
            now: The clock value.
            pending: Waiting jobs (valid for this cluster).
            running: Running jobs; what their ``block`` holds is not free.
            free: Free mask over the topology's nodes, or, on a cluster that shares nodes,
                what is free on each node. Not modified.
            presorted: ``pending`` is already in this ordering's order (only honoured for
                orderings that do not depend on the clock).
            running_sorted: ``running`` is sorted by expected end (start + estimate), which
                lets the shadow time be found without sorting every running job.
            committed_head: With ``commit_head``, the job to keep first (if still pending).

        Returns:
            The jobs to start now, with their blocks, and the reservations made.
        """
        order: Sequence[JobLike]
        if presorted and not self.ordering.time_dependent:
            order = pending
        else:
            order = self.ordering.sort(pending, now)
        if self.commit_head and committed_head is not None:
            order = _move_to_front(order, committed_head)
        pass_ = _Pass(self.topology, now, free, running, running_sorted)
        if self.backfill is Backfill.CONSERVATIVE:
            pass_.conservative(order)
            return pass_.decisions
        head_index = pass_.start_in_order(order)
        if head_index is None or self.backfill is Backfill.NONE:
            return pass_.decisions
        head = order[head_index]
        if isinstance(pass_.cap, CountCapacity):
            # Counting is cheaper than any memo key.
            shadow, reserved, at_shadow = pass_.shadow(head.request)
        else:
            holders = pass_.holders_by_key()
            memo = self._shadow_memo
            reused = memo.advance(head, holders) if memo is not None else None
            if reused is None:
                shadow, reserved, at_shadow = pass_.shadow(head.request)
                self._shadow_memo = _ShadowMemo(
                    head.job_id, head.request, shadow, reserved, at_shadow.copy(), holders
                )
            else:
                shadow, reserved, at_shadow = reused
            at_shadow = at_shadow.copy()
        pass_.decisions.reservations.append(
            Reservation(head.job_id, shadow, reserved if reserved is not None else 0)
        )
        rest = order[head_index + 1 :]
        if self.backfill is Backfill.STRICT:
            pass_.backfill(sorted(rest, key=lambda j: j.request.submit_time), shadow, None)
        else:
            pass_.backfill(rest, shadow, at_shadow)
        return pass_.decisions


class _Pass:
    """The working state of one scheduling pass (never escapes :meth:`SchedulerCore.schedule`)."""

    def __init__(
        self,
        topology: BaseTopology,
        now: float,
        free: FreeResources,
        running: Sequence[RunningLike],
        running_sorted: bool = False,
    ) -> None:
        self.now = now
        self.cap: BaseCapacity = capacity_for(topology, free)
        # Node counts become blocks of the lowest free nodes (flat clusters only).
        self.work_free = free.copy() if isinstance(free, np.ndarray) else None
        self.decisions = Decisions()
        self.running = running
        self.running_sorted = running_sorted
        self.started: list[tuple[float, Block]] = []

    @property
    def holders(self) -> list[tuple[float, Block]]:
        """(expected end, block) of everything holding nodes, including jobs started this pass
        (built on demand: a pass where every job starts never needs it)."""
        now = self.now
        held = [(max(r.start_time + r.request.estimate, now), r.block) for r in self.running]
        return held + self.started

    def holders_by_end(self) -> Iterator[tuple[float, Block]]:
        """Holders in order of expected end; lazy when ``running`` comes sorted."""
        if not self.running_sorted:
            return iter(sorted(self.holders, key=lambda h: h[0]))
        now = self.now
        running = ((max(r.start_time + r.request.estimate, now), r.block) for r in self.running)
        return heapq.merge(running, sorted(self.started, key=lambda h: h[0]), key=lambda h: h[0])

    def holders_by_key(self) -> dict[tuple[int, int, float], Block]:
        """Holders keyed by (id of their node array, size, expected end).

        A running job's block lives as long as the job holds it, so the id names it while it is
        held; size and end make a reused id after a job ended collide only by coincidence of all
        three, and then only with a holder that ended (which the memo treats as a change).
        """
        return {(id(block.nodes), block.size, end): block for end, block in self.holders}

    def start(self, job: JobLike, placement: Placement) -> None:
        if isinstance(placement, Block):
            block = placement
        else:
            assert self.work_free is not None
            block = Block(nodes=np.flatnonzero(self.work_free)[:placement].astype(np.int64))
        if self.work_free is not None:
            self.work_free[block.nodes] = False
        self.cap.take(placement if isinstance(placement, Block) else block.size)
        self.started.append((self.now + job.request.estimate, block))
        self.decisions.starts.append(Start(job.job_id, block))

    def start_in_order(self, order: Sequence[JobLike]) -> int | None:
        """Start jobs in order until one does not fit; return its index (None if all started)."""
        for i, job in enumerate(order):
            placement = self.cap.place(job.request)
            if placement is None:
                self.decisions.head = job.job_id
                return i
            self.start(job, placement)
        return None

    def shadow(self, head: JobRequest) -> tuple[float, Placement | None, BaseCapacity]:
        """Earliest time the head fits as holders end, its placement then, and the capacity
        left at that time once the head's placement is taken out.

        Whether the head fits only improves as jobs end (free sets only grow), so the earliest
        end time is found by galloping then binary search: O(log k) placement queries when the
        head fits after the k-th end, not R. On a busy machine k is usually small.
        """
        n = head.node_count
        if isinstance(self.cap, CountCapacity):
            free_then = self.cap.count
            for end, block in self.holders_by_end():
                free_then += block.size
                if free_then >= n:
                    return end, n, CountCapacity(free_then - n)
            return math.inf, None, CountCapacity(free_then)
        ordered = list(self.holders_by_end())
        # Skip the ends before which too few nodes are free, whatever the topology.
        free_then = self.cap.free_count
        first = len(ordered)
        for i, (_, block) in enumerate(ordered):
            free_then += block.size
            if free_then >= n:
                first = i
                break

        def future_at(k: int) -> BaseCapacity:
            future = self.cap.copy()
            for _, block in ordered[: k + 1]:
                future.give(block)
            return future

        found: dict[int, tuple[BaseCapacity, Placement]] = {}

        def fits_at(k: int) -> bool:
            future = future_at(k)
            placement = future.place(head)
            if placement is None:
                return False
            found[k] = (future, placement)
            return True

        # Gallop: first, first + 1, first + 3, first + 7, ... until the head fits.
        lo, step = first, 1
        hi = len(ordered)
        probe = first
        while probe < len(ordered):
            if fits_at(probe):
                hi = probe
                break
            lo = probe + 1
            probe = first + 2 * step - 1
            step *= 2
        if hi == len(ordered) and ordered and fits_at(len(ordered) - 1):
            hi = len(ordered) - 1
        # Binary search in [lo, hi]: the head does not fit before lo and fits at hi.
        while lo < hi:
            mid = (lo + hi) // 2
            if fits_at(mid):
                hi = mid
            else:
                lo = mid + 1
        if hi >= len(ordered) or hi not in found:
            # Unreachable for a request valid on this cluster; without a reservation nothing
            # has to wait for the head.
            return math.inf, None, future_at(len(ordered) - 1) if ordered else self.cap.copy()
        future, placement = found[hi]
        future.take(placement)
        return ordered[hi][0], placement, future

    def backfill(
        self, rest: Sequence[JobLike], shadow: float, at_shadow: BaseCapacity | None
    ) -> None:
        """Start later jobs that end by the shadow time, and (EASY, when ``at_shadow`` is given)
        jobs that only use nodes the head will not need then. Without ``at_shadow`` this is
        RLScheduler's strict variant: no extra-nodes rule, and a job must end strictly before
        the shadow time (their environment compares with ``<``)."""
        # A request that did not fit stays unfit for the rest of the pass (capacities only
        # shrink), and so does any box that contains it: remember failures per capacity.
        shared = isinstance(self.cap, SharedCapacity)
        failed_now = _Failures(shared)
        failed_both = _Failures(shared)
        both: BaseCapacity | None = None
        for job in rest:
            if self.cap.free_count == 0:
                return
            request = job.request
            if request.node_count > self.cap.free_count:
                continue
            end = self.now + request.estimate
            if end < shadow or (end == shadow and at_shadow is not None):
                if failed_now.covers(request):
                    continue
                placement = self.cap.place(request)
                if placement is None:
                    failed_now.add(request)
                    continue
            else:
                # Overruns the shadow time: only nodes the head job will not need then.
                if at_shadow is None:
                    continue
                if failed_both.covers(request) or failed_now.covers(request):
                    continue
                if both is None:
                    both = self.cap.intersect(at_shadow)
                placement = both.place(request)
                if placement is None:
                    failed_both.add(request)
                    continue
                at_shadow.take(placement)
            self.start(job, placement)
            # Both capacities shrank; the intersection is rebuilt on next use.
            both = None

    def conservative(self, order: Sequence[JobLike]) -> None:
        """Reserve every job, in order, at the earliest time it fits around earlier ones."""
        times, caps = self._capacity_profile()
        for job in order:
            request = job.request
            found = _earliest_fit(times, caps, request)
            if found is None:
                if self.decisions.head is None:
                    self.decisions.head = job.job_id
                continue
            i, j, placement = found
            end = times[i] + request.estimate
            if math.isfinite(end) and (j == len(times) or times[j] != end):
                times.insert(j, end)
                caps.insert(j, caps[j - 1].copy())
            for k in range(i, j):
                caps[k].take(placement)
            if i == 0:
                self.start(job, placement)
            else:
                if self.decisions.head is None:
                    self.decisions.head = job.job_id
                self.decisions.reservations.append(Reservation(job.job_id, times[i], placement))

    def _capacity_profile(self) -> tuple[list[float], list[BaseCapacity]]:
        """Step times and the capacity free from each until the next: now, then each holder's
        expected end."""
        times: list[float] = [self.now]
        caps: list[BaseCapacity] = [self.cap.copy()]
        for end, block in sorted(self.holders, key=lambda h: h[0]):
            if not math.isfinite(end):
                break
            # Step 0 is what is free now. A holder past its expected end (its end is clamped to
            # now) still holds its nodes: they come back in a later step, at the same time.
            if end > times[-1] or len(times) == 1:
                times.append(end)
                caps.append(caps[-1].copy())
            caps[-1].give(block)
        return times, caps


def _earliest_fit(
    times: Sequence[float], caps: Sequence[BaseCapacity], request: JobRequest
) -> tuple[int, int, Placement] | None:
    """The first step ``i`` at which ``request`` fits through every step ``i..j-1`` its run
    spans, with the placement; None when it fits nowhere."""
    n = request.node_count
    for i, t in enumerate(times):
        if caps[i].free_count < n:
            continue
        end = t + request.estimate
        window = caps[i].copy()
        j = i + 1
        while j < len(times) and times[j] < end and window.free_count >= n:
            window = window.intersect(caps[j])
            j += 1
        if window.free_count < n:
            continue
        placement = window.place(request)
        if placement is not None:
            return i, j, placement
    return None


def _move_to_front(order: Sequence[JobLike], job_id: int | str) -> Sequence[JobLike]:
    for i, job in enumerate(order):
        if job.job_id == job_id:
            if i == 0:
                return order
            return [job, *order[:i], *order[i + 1 :]]
    return order


class _ShadowMemo:
    """The head's shadow time and reservation, carried across passes while they stay valid.

    EASY's promise makes this sound: as long as no job that held nodes has ended (no holder
    removed) and every job started since either ends by the shadow time or stays off the
    reserved block, the head still fits at the same time on the same block, and no earlier
    (nothing was freed). New long jobs only take nodes out of the capacity left at the shadow.
    Any other change (an end, a new head, a job on the reserved block) forces a recomputation.
    """

    __slots__ = ("at_shadow", "head_id", "holders", "request", "reserved", "shadow")

    def __init__(
        self,
        head_id: int | str,
        request: JobRequest,
        shadow: float,
        reserved: Placement | None,
        at_shadow: BaseCapacity,
        holders: dict[tuple[int, int, float], Block],
    ) -> None:
        self.head_id = head_id
        self.request = request
        self.shadow = shadow
        self.reserved = reserved
        self.at_shadow = at_shadow
        self.holders = holders

    def advance(
        self, head: JobLike, holders: dict[tuple[int, int, float], Block]
    ) -> tuple[float, Placement | None, BaseCapacity] | None:
        """The memo brought up to ``holders``, or None when it must be recomputed."""
        if head.job_id != self.head_id or head.request != self.request:
            return None
        if not isinstance(self.reserved, Block) or not self.holders.keys() <= holders.keys():
            return None
        reserved = self.reserved.nodes
        at_shadow = self.at_shadow.copy()
        for key, block in holders.items():
            if key in self.holders or key[2] <= self.shadow:
                continue
            if np.isin(block.nodes, reserved, assume_unique=True).any():
                return None
            at_shadow.take(block)
        self.holders = holders
        self.at_shadow = at_shadow.copy()
        return self.shadow, self.reserved, at_shadow


class _Failures:
    """Requests known not to fit a capacity that only shrinks.

    A box that failed (in every allowed orientation) rules out every box at least as large along
    each axis (compared in sorted order when axes may be swapped, in the given order for
    ``:strict``), in the same mode. Node-count requests fail on a count, which the caller checks.
    On a cluster that shares nodes a request is a vector (nodes, cores, GPUs and memory per
    node) in its partition: one that failed rules out every one at least as large in each.
    """

    __slots__ = ("_boxes", "_counts", "_shared")

    def __init__(self, shared: bool = False) -> None:
        self._boxes: dict[tuple[object, bool], list[tuple[int, ...]]] = {}
        self._counts: int | None = None
        self._shared = shared

    def _key(self, request: JobRequest) -> tuple[tuple[object, bool], tuple[int, ...]] | None:
        if self._shared:
            # Memory left out (0) is a share of the cores: comparable only with its own kind.
            explicit = request.mem_per_node_mb > 0
            group = (f"{request.partition}|{request.exclusive}|{explicit}", False)
            demand = (
                request.node_count,
                request.cpus_on_node,
                request.gpus_on_node,
                request.mem_per_node_mb,
            )
            return group, demand
        shape = request.shape
        if shape is None or shape.mode.value == "noncont":
            return None
        extents = shape.extents3 if shape.strict else tuple(sorted(shape.extents3))
        return (shape.mode, shape.strict), extents

    def covers(self, request: JobRequest) -> bool:
        key = self._key(request)
        if key is None:
            return self._counts is not None and request.node_count >= self._counts
        group, extents = key
        return any(
            all(e >= f for e, f in zip(extents, failed, strict=True))
            for failed in self._boxes.get(group, ())
        )

    def add(self, request: JobRequest) -> None:
        key = self._key(request)
        if key is None:
            n = request.node_count
            self._counts = n if self._counts is None else min(self._counts, n)
            return
        group, extents = key
        # Keep only the minimal failures: a larger one adds nothing once a smaller one is known.
        boxes = self._boxes.setdefault(group, [])
        if any(all(e >= f for e, f in zip(extents, old, strict=True)) for old in boxes):
            return
        boxes[:] = [
            old for old in boxes if not all(o >= e for o, e in zip(old, extents, strict=True))
        ]
        boxes.append(extents)
