"""Simulator invariants on real and synthetic workloads, and the RLScheduler acceptance check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator.resources.cluster import Cluster, load_cluster
from orchestrator.resources.request import JobRequest
from orchestrator.resources.topology import FlatTopology, Torus3DTopology
from orchestrator.simulate.engine import simulate
from orchestrator.simulate.protocol import (
    PUBLISHED_LUBLIN_256,
    rlscheduler_protocol,
    window_starts,
)
from orchestrator.simulate.swf import read_swf
from orchestrator.simulate.workload import WorkloadJob, synthetic_torus_workload, workload_from_swf


def assert_no_node_held_twice(records: pd.DataFrame) -> None:
    """Sweep start/end events: a node taken while still held fails."""
    events = []
    for row in records.itertuples():
        events.append((row.end, 0, row.node_ids))  # ends first at equal times
        events.append((row.start, 1, row.node_ids))
    held: set[int] = set()
    for _, kind, nodes in sorted(events, key=lambda e: (e[0], e[1])):
        if kind == 0:
            held.difference_update(nodes)
        else:
            assert held.isdisjoint(nodes), "a node was given to two jobs at once"
            held.update(nodes)


def assert_invariants(records: pd.DataFrame) -> None:
    assert (records["start"] >= records["submit"]).all(), "a job started before its submit time"
    assert (records["nodes"] >= records["requested_nodes"]).all()
    assert_no_node_held_twice(records)


@pytest.fixture(scope="module")
def lublin_window(shipped_trace: Path) -> tuple[Cluster, list[WorkloadJob]]:
    trace = read_swf(shipped_trace)
    cluster = Cluster("lublin", FlatTopology(256))
    jobs, _ = workload_from_swf(trace, cluster, window=(2000, 1500))
    return cluster, jobs


@pytest.mark.parametrize("backfill", ["none", "easy", "strict", "conservative"])
@pytest.mark.parametrize("order", ["fcfs", "sjf", "wfp3", "multifactor"])
def test_flat_invariants(
    lublin_window: tuple[Cluster, list[WorkloadJob]], order: str, backfill: str
) -> None:
    cluster, jobs = lublin_window
    result = simulate(cluster, jobs, order=order, backfill=backfill, record_nodes=True)
    assert result.metrics.jobs == len(jobs)
    assert_invariants(result.jobs)
    assert 0 < result.metrics.utilization <= 1


@pytest.mark.parametrize("backfill", ["easy", "conservative"])
def test_reservations_are_never_delayed(
    lublin_window: tuple[Cluster, list[WorkloadJob]], backfill: str
) -> None:
    # Under FCFS the head keeps its place, so with EASY its reservation (and with conservative
    # every reservation) is an upper bound of its start: backfilling never delays it.
    cluster, jobs = lublin_window
    records = simulate(cluster, jobs, order="fcfs", backfill=backfill).jobs
    reserved = records.dropna(subset=["reserved_at"])
    assert len(reserved) > 50
    assert (reserved["start"] <= reserved["reserved_at"] + 1e-9).all()


def test_backfilling_helps_and_modes_differ(
    lublin_window: tuple[Cluster, list[WorkloadJob]],
) -> None:
    cluster, jobs = lublin_window
    bsld = {
        b: simulate(cluster, jobs, order="fcfs", backfill=b).metrics.mean_bsld
        for b in ("none", "strict", "easy", "conservative")
    }
    assert bsld["easy"] < bsld["none"] / 5
    assert bsld["conservative"] < bsld["none"] / 5
    assert len({round(v, 6) for v in bsld.values()}) == 4


@pytest.mark.parametrize("backfill", ["easy", "conservative", "none"])
def test_torus_invariants_and_reservations(backfill: str) -> None:
    cluster = Cluster("t", Torus3DTopology([6, 6, 4], [2, 3, 2]))
    # Conservative keeps a profile of masks per pass: fewer jobs keep the test quick.
    n_jobs = 120 if backfill == "conservative" else 300
    jobs = synthetic_torus_workload(cluster, n_jobs, seed=3, load=1.2, max_fraction=0.4)
    result = simulate(cluster, jobs, order="fcfs", backfill=backfill, record_nodes=True)
    assert_invariants(result.jobs)
    assert result.metrics.fragmentation is not None
    assert 0 <= result.metrics.fragmentation < 1
    if backfill == "easy":
        # On a torus the head's reservation is a specific sub-box; backfilling never delays it.
        # (Conservative re-plans every reservation each pass; on a torus a re-planned earlier
        # job may take another box, so only the head's guarantee holds: see docs/simulation.md.)
        reserved = result.jobs.dropna(subset=["reserved_at"])
        assert len(reserved) > 10
        assert (reserved["start"] <= reserved["reserved_at"] + 1e-9).all()


def test_tree_invariants() -> None:
    cluster = load_cluster("slurm16")
    rng = np.random.default_rng(5)
    jobs = [
        WorkloadJob(
            i,
            JobRequest(
                nodes=int(rng.integers(1, 12)),
                walltime_s=float(rng.integers(60, 600)),
                submit_time=float(i * 20),
            ),
            float(rng.integers(10, 600)),
        )
        for i in range(300)
    ]
    result = simulate(cluster, jobs, order="sjf", backfill="easy", record_nodes=True)
    assert_invariants(result.jobs)
    assert result.metrics.killed == int((result.jobs["trace_run"] > result.jobs["estimate"]).sum())


def test_kill_at_walltime_and_actual_estimates(
    lublin_window: tuple[Cluster, list[WorkloadJob]],
) -> None:
    cluster = Cluster("c", FlatTopology(4))
    jobs = [WorkloadJob(1, JobRequest(nodes=2, walltime_s=100.0), 500.0)]
    killed = simulate(cluster, jobs).jobs.iloc[0]
    assert bool(killed["killed"]) and killed["run"] == 100.0
    kept = simulate(cluster, jobs, kill_at_walltime=False).jobs.iloc[0]
    assert not bool(kept["killed"]) and kept["run"] == 500.0


def _wj(job_id: int, nodes: int, run: float, submit: float) -> WorkloadJob:
    return WorkloadJob(job_id, JobRequest(nodes=nodes, walltime_s=run, submit_time=submit), run)


def test_one_event_per_pass_backfills_between_completions_of_the_same_second() -> None:
    # Jobs 1 (1 node) and 2 (2 nodes) end together at t=10; job 3 holds the last node until
    # 100, so head 4 (all 4 nodes) waits until then. Taking both completions before one pass,
    # strict backfilling (FCFS order) finds 3 free nodes and starts job 5 (3 nodes); taking them
    # one at a time (RLScheduler's environment; job 1 started first, so it ends first), it finds
    # 1 free node after the first and starts job 6 instead; job 5 waits for job 6.
    cluster = Cluster("four", FlatTopology(4))
    jobs = [_wj(1, 1, 10, 0), _wj(2, 2, 10, 0), _wj(3, 1, 100, 0)]
    jobs += [_wj(4, 4, 5, 1), _wj(5, 3, 5, 2), _wj(6, 1, 5, 3)]

    def starts(one: bool) -> dict[int, float]:
        records = simulate(
            cluster, jobs, order="fcfs", backfill="strict", commit_head=True, one_event_per_pass=one
        ).jobs
        return dict(zip(records["job_id"], records["start"], strict=True))

    assert starts(False) == {1: 0, 2: 0, 3: 0, 4: 100, 5: 10, 6: 15}
    assert starts(True) == {1: 0, 2: 0, 3: 0, 4: 100, 5: 15, 6: 10}


def test_commit_head_commits_a_job_chosen_while_no_node_is_free() -> None:
    # The machine is full when job 2 (long) arrives alone: it is chosen then, and with
    # commit_head it starts first at t=10 although job 3 (short, SJF's choice) came meanwhile.
    cluster = Cluster("two", FlatTopology(2))
    jobs = [_wj(1, 2, 10, 0), _wj(2, 2, 100, 1), _wj(3, 2, 5, 2)]
    committed = simulate(cluster, jobs, order="sjf", backfill="none", commit_head=True).jobs
    assert list(committed["start"]) == [0, 10, 110]
    reranked = simulate(cluster, jobs, order="sjf", backfill="none").jobs
    assert list(reranked["start"]) == [0, 15, 10]


def test_schedgym_window_draws() -> None:
    """gym's seeding (SHA-512 of the seed into numpy's RandomState), one
    ``randint(1024, n - 1025)`` a window: the windows of their published table."""
    starts = window_starts(10_000, draw="schedgym")
    assert starts == [1981, 2756, 4299, 8850, 3316, 2714, 5228, 7762, 4022, 7085]
    assert window_starts(10_000, draw="schedgym", seed=1, windows=3) == starts[:3]
    assert window_starts(10_000) != starts
    with pytest.raises(ValueError, match="more than 2049"):
        window_starts(2049, draw="schedgym")


def test_rlscheduler_protocol_schedgym_reproduces_the_published_table(shipped_trace: Path) -> None:
    """Acceptance: with their environment's rules (variant ``schedgym``), every published cell
    (five orderings, without and with their backfilling) comes out to the published digits."""
    from orchestrator.scheduling.policies import Backfill

    rows = rlscheduler_protocol(
        read_swf(shipped_trace),
        Cluster("lublin", FlatTopology(256)),
        backfills=(Backfill.NONE, Backfill.STRICT),
        variant="schedgym",
    )
    got = {(r.order, r.backfill): round(r.mean_bsld, 2) for r in rows}
    assert got == PUBLISHED_LUBLIN_256


def test_rlscheduler_protocol_matches_published_magnitudes_and_ranking(shipped_trace: Path) -> None:
    """The ``described`` variant (other windows, all events of a time per pass): FCFS / SJF /
    F1, with and without their backfilling, land in the same order of magnitude as the
    published table; F1 < SJF < FCFS without backfilling, and FCFS is the worst of the three
    with it (SJF and F1 with backfilling are 2 % apart in their table: their order depends on
    the windows)."""
    from orchestrator.scheduling.policies import Backfill

    rows = rlscheduler_protocol(
        read_swf(shipped_trace),
        Cluster("lublin", FlatTopology(256)),
        orders=("fcfs", "sjf", "f1"),
        backfills=(Backfill.NONE, Backfill.STRICT),
    )
    got = {(r.order, r.backfill): r for r in rows}
    for row in rows:
        assert row.published_bsld is not None
        ratio = row.mean_bsld / row.published_bsld
        assert 0.3 < ratio < 3.0, (
            f"{row.order}/{row.backfill}: {row.mean_bsld} vs {row.published_bsld}"
        )
    none = {o: got[(o, "none")].mean_bsld for o in ("fcfs", "sjf", "f1")}
    assert none["f1"] < none["sjf"] < none["fcfs"]
    strict = {o: got[(o, "strict")].mean_bsld for o in ("fcfs", "sjf", "f1")}
    assert max(strict, key=strict.__getitem__) == "fcfs"
