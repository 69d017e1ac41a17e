"""Hand-computed schedules for the scheduler core (FCFS, EASY, strict, conservative)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from orchestrator.resources.request import JobRequest
from orchestrator.resources.topology import Block, FlatTopology, NodeArray, Torus3DTopology
from orchestrator.scheduling.core import SchedulerCore
from orchestrator.scheduling.policies import (
    Backfill,
    FairShareLedger,
    MultifactorOrdering,
    make_ordering,
)


@dataclass(frozen=True)
class Job:
    job_id: str
    request: JobRequest


@dataclass(frozen=True)
class Running:
    job_id: str
    request: JobRequest
    block: Block
    start_time: float


def job(
    job_id: str, nodes: int | None = None, est: float = 10, submit: float = 0, **kw: object
) -> Job:
    return Job(job_id, JobRequest(nodes=nodes, estimate_s=est, submit_time=submit, **kw))  # type: ignore[arg-type]


def running(job_id: str, nodes: list[int], end: float, start: float = 0) -> Running:
    request = JobRequest(nodes=len(nodes), estimate_s=end - start, submit_time=start)
    return Running(job_id, request, Block(nodes=np.array(nodes, dtype=np.int64)), start)


def free_mask(size: int, busy: list[int]) -> np.ndarray:
    mask = np.ones(size, dtype=bool)
    mask[busy] = False
    return mask


def started(decisions: object) -> list[str]:
    return [str(s.job_id) for s in decisions.starts]  # type: ignore[attr-defined]


# A 4-node flat cluster; R holds nodes 0-2 until t=10; one node free at t=0.
FLAT = FlatTopology(4)
RUN = [running("R", [0, 1, 2], end=10)]
FREE = free_mask(4, [0, 1, 2])


def schedule(backfill: Backfill, pending: list[Job], order: str = "fcfs") -> object:
    core = SchedulerCore(FLAT, make_ordering(order, 4), backfill)
    return core.schedule(0.0, pending, RUN, FREE)


def test_fcfs_without_backfill_blocks_behind_the_head() -> None:
    pending = [job("A", 2, submit=0), job("B", 1, est=5, submit=1)]
    d = schedule(Backfill.NONE, pending)
    assert started(d) == []
    assert d.head == "A"  # type: ignore[attr-defined]


def test_easy_backfills_a_short_job_before_the_shadow_time() -> None:
    pending = [job("A", 2, submit=0), job("B", 1, est=5, submit=1)]
    d = schedule(Backfill.EASY, pending)
    assert started(d) == ["B"]
    (reservation,) = d.reservations  # type: ignore[attr-defined]
    assert (reservation.job_id, reservation.start_time, reservation.placement) == ("A", 10.0, 2)


def test_easy_extra_nodes_rule_and_strict_variant() -> None:
    # B overruns the shadow time (t=10) but uses 1 node; at t=10 there are 4 free and A needs 2:
    # 2 extra nodes, so EASY starts B. RLScheduler's strict variant does not.
    pending = [job("A", 2, submit=0), job("B", 1, est=50, submit=1)]
    assert started(schedule(Backfill.EASY, pending)) == ["B"]
    assert started(schedule(Backfill.STRICT, pending)) == []


def test_strict_backfill_needs_an_end_strictly_before_the_shadow_time() -> None:
    # B would end exactly at the shadow time (t=10): EASY takes it, RLScheduler's environment
    # compares ``now + r < earliest start`` and does not.
    pending = [job("A", 2, submit=0), job("B", 1, est=10, submit=1)]
    assert started(schedule(Backfill.EASY, pending)) == ["B"]
    assert started(schedule(Backfill.STRICT, pending)) == []
    pending = [job("A", 2, submit=0), job("B", 1, est=9, submit=1)]
    assert started(schedule(Backfill.STRICT, pending)) == ["B"]


def test_easy_refuses_a_job_that_would_delay_the_head() -> None:
    # A needs all 4 nodes at t=10: no extra nodes, so a long 1-node job must wait.
    pending = [job("A", 4, submit=0), job("B", 1, est=50, submit=1), job("C", 1, est=3, submit=2)]
    assert started(schedule(Backfill.EASY, pending)) == ["C"]


def test_conservative_reserves_every_job() -> None:
    # A reserved at 10 (2 nodes). B (1 node, 20 s) fits now: [0,10) has 1 free, [10,..) 2 spare.
    # C (1 node, 20 s) finds nothing free now, so it is reserved at 10 on the last spare node.
    # D (2 nodes, 5 s): A (10-20) and B (0-20) end at 20, C holds one node until 30: D at 20.
    pending = [
        job("A", 2, submit=0),
        job("B", 1, est=20, submit=1),
        job("C", 1, est=20, submit=2),
        job("D", 2, est=5, submit=3),
    ]
    d = schedule(Backfill.CONSERVATIVE, pending)
    assert started(d) == ["B"]
    reservations = {r.job_id: r.start_time for r in d.reservations}  # type: ignore[attr-defined]
    assert reservations == {"A": 10.0, "C": 10.0, "D": 20.0}


def test_ordering_changes_who_goes_first() -> None:
    # Both fit only one at a time on the single free node; SJF picks the shorter.
    pending = [job("long", 1, est=100, submit=0), job("short", 1, est=5, submit=1)]
    assert started(schedule(Backfill.NONE, pending, "fcfs")) == ["long"]
    assert started(schedule(Backfill.NONE, pending, "sjf")) == ["short"]


def test_core_does_not_modify_inputs() -> None:
    pending = [job("A", 2), job("B", 1, est=5)]
    before = FREE.copy()
    schedule(Backfill.CONSERVATIVE, pending)
    schedule(Backfill.EASY, pending)
    assert np.array_equal(FREE, before)


def test_reservation_on_a_torus_holds_specific_nodes() -> None:
    # An 8-node line (mesh, no wrap). R holds 0-3 until t=10; nodes 4-7 are free.
    topo = Torus3DTopology([8, 1, 1])
    run = [running("R", [0, 1, 2, 3], end=10)]
    free = free_mask(8, [0, 1, 2, 3])
    head = Job("H", JobRequest(shape="6:mesh", estimate_s=10, submit_time=0))
    backfill = Job("B", JobRequest(shape="2:mesh", estimate_s=100, submit_time=1))
    core = SchedulerCore(topo, make_ordering("fcfs", 8), Backfill.EASY)
    d = core.schedule(0.0, [head, backfill], run, free)
    (reservation,) = d.reservations
    reserved: NodeArray = reservation.placement.nodes  # type: ignore[union-attr]
    assert reservation.start_time == 10.0 and reserved.tolist() == [0, 1, 2, 3, 4, 5]
    # Alone, B's best fit would be nodes 4-5 (against busy node 3); it must avoid the
    # reservation and take 6-7 instead.
    (start,) = d.starts
    assert start.job_id == "B" and start.block.nodes.tolist() == [6, 7]
    alone = core.schedule(0.0, [backfill], run, free)
    assert alone.starts[0].block.nodes.tolist() == [4, 5]


def test_commit_head_keeps_the_chosen_job_first() -> None:
    core = SchedulerCore(FLAT, make_ordering("sjf", 4), Backfill.NONE, commit_head=True)
    pending = [job("big", 2, est=50, submit=0), job("tiny", 1, est=1, submit=5)]
    # Without a commitment SJF starts the tiny job; committed to "big", nothing starts.
    assert started(core.schedule(0.0, pending, RUN, FREE)) == ["tiny"]
    assert started(core.schedule(0.0, pending, RUN, FREE, committed_head="big")) == []


@pytest.mark.parametrize(
    ("order", "expected"),
    [("fcfs", ["a", "b", "c"]), ("sjf", ["c", "b", "a"]), ("wfp3", ["c", "b", "a"])],
)
def test_orderings(order: str, expected: list[str]) -> None:
    jobs = [
        job("a", 1, est=300, submit=0),
        job("b", 1, est=200, submit=10),
        job("c", 1, est=100, submit=20),
    ]
    ordering = make_ordering(order, 4)
    assert [j.job_id for j in ordering.sort(jobs, now=1000.0)] == expected


def test_f1_and_unicep_scores() -> None:
    f1 = make_ordering("f1", 10)
    r = JobRequest(nodes=4, estimate_s=100, submit_time=1000)
    assert f1.score(r, 0) == pytest.approx(2 * 4 + 870 * 3)
    unicep = make_ordering("unicep", 10)
    assert unicep.score(r, 1100) == pytest.approx(-100 / (2 * 100))


def test_multifactor_fair_share_and_age() -> None:
    ledger = FairShareLedger(half_life_s=100.0)
    ordering = MultifactorOrdering(4, ledger=ledger)
    heavy = job("heavy", 1, user="alice")
    light = job("light", 1, user="bob", submit=0)
    ledger.charge("alice", 1000.0, now=0.0)
    assert [j.job_id for j in ordering.sort([heavy, light], 0.0)] == ["light", "heavy"]
    # Usage decays with the half-life: after many half-lives both users are alike again.
    assert ledger.usage("alice", 1000.0) == pytest.approx(1000.0 * 2**-10)
    assert ordering.priority(light.request, 0.0) > ordering.priority(heavy.request, 0.0)
    # The job's own priority (Slurm's QOS factor) adds on top of age, fair share and size.
    boosted = job("boosted", 1, user="alice", priority=20000)
    assert ordering.sort([light, boosted], 0.0)[0].job_id == "boosted"


def test_conservative_keeps_the_nodes_of_a_holder_past_its_expected_end() -> None:
    # R was expected to end at 10 but still holds nodes 0-2 at t=20 (its completion not yet
    # processed, or it overran its estimate). Only node 3 is free: A (2 nodes) must not start
    # now; it is reserved for when R's nodes come back.
    core = SchedulerCore(FLAT, make_ordering("fcfs", 4), Backfill.CONSERVATIVE)
    d = core.schedule(20.0, [job("A", 2, est=5, submit=0), job("B", 1, est=5, submit=1)], RUN, FREE)
    assert started(d) == ["B"]
    assert {r.job_id: r.start_time for r in d.reservations} == {"A": 20.0}  # type: ignore[attr-defined]
