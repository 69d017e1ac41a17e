"""The steppable simulator: stepping to the end gives ``simulate()``'s result, and the state seen
between steps is consistent (time never goes back, no job both queued and running, node use
within capacity)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.resources.cluster import Cluster, load_cluster
from orchestrator.resources.request import JobRequest
from orchestrator.resources.topology import FlatTopology, Torus3DTopology
from orchestrator.simulate.engine import (
    Simulation,
    SimulationNotFinishedError,
    SimulationResult,
    Step,
    simulate,
)
from orchestrator.simulate.swf import read_swf
from orchestrator.simulate.workload import WorkloadJob, synthetic_torus_workload, workload_from_swf

OPTIONS = ("order", "backfill", "commit_head", "one_event_per_pass")


def _wj(
    job_id: int, nodes: int, run: float, submit: float, walltime: float | None = None
) -> WorkloadJob:
    limit = run if walltime is None else walltime
    request = JobRequest(nodes=nodes, walltime_s=limit, submit_time=submit)
    return WorkloadJob(job_id, request, run)


def assert_same_result(stepped: SimulationResult, whole: SimulationResult) -> None:
    pd.testing.assert_frame_equal(stepped.jobs, whole.jobs, check_exact=True)
    got, want = stepped.metrics.as_dict(), whole.metrics.as_dict()
    for timing in ("wall_s", "jobs_per_s"):
        got.pop(timing), want.pop(timing)
    assert got == want
    assert stepped.skipped == whole.skipped


def check_state(sim: Simulation, cluster: Cluster) -> None:
    """What a caller sees between steps is one consistent machine."""
    queued = {j.job_id for j in sim.queue}
    running = {j.job_id for j in sim.running}
    assert len(queued) == len(sim.queue) and len(running) == len(sim.running)
    assert not queued & running, "a job is both queued and running"
    held = [int(n) for j in sim.running for n in j.block.nodes]
    assert len(held) == len(set(held)), "a node is held by two jobs"
    assert len(held) + sim.free_nodes == cluster.size
    assert 0 <= sim.free_nodes <= cluster.size
    for job in sim.queue:
        assert job.request.submit_time <= sim.now and math.isnan(job.start)
    for job in sim.running:
        assert job.request.submit_time <= job.start <= sim.now <= job.end
        assert job.block.size >= job.request.node_count
    ends = [j.start + j.request.estimate for j in sim.running]
    assert ends == sorted(ends), "running jobs are not in order of expected end"


def step_through(sim: Simulation, cluster: Cluster) -> list[Step]:
    steps = []
    previous = sim.now
    arrived = finished = 0
    check_state(sim, cluster)
    while (step := sim.step()) is not None:
        assert step.time == sim.now >= previous, "time went backwards"
        previous = step.time
        check_state(sim, cluster)
        arrived += len(step.arrived)
        finished += len(step.finished)
        assert sim.finished_jobs == finished
        assert arrived == finished + len(sim.queue) + len(sim.running)
        queued = {j.job_id for j in sim.queue}
        running = {j.job_id for j in sim.running}
        assert set(step.started) <= running
        for job_id in step.arrived:
            assert job_id in queued or job_id in step.started
        assert not set(step.finished) & (queued | running)
        assert not set(step.started) & queued
        steps.append(step)
    assert sim.done and sim.step() is None and sim.now == previous
    return steps


def test_steps_of_a_small_run_by_hand() -> None:
    # Jobs 1 and 2 fill the machine at t=0; job 3 (all 4 nodes) arrives at t=1 and waits for
    # both to end (2 at t=5, 1 at t=10).
    cluster = Cluster("four", FlatTopology(4))
    jobs = [_wj(1, 2, 10, 0), _wj(2, 2, 5, 0), _wj(3, 4, 5, 1)]
    sim = Simulation(cluster, jobs, order="fcfs", backfill="easy")
    assert sim.now == 0 and not sim.queue and not sim.running and sim.free_nodes == 4
    assert sim.step() == Step(0.0, finished=(), arrived=(1, 2), started=(1, 2))
    assert [j.job_id for j in sim.running] == [2, 1] and sim.free_nodes == 0
    assert sim.step() == Step(1.0, finished=(), arrived=(3,), started=())
    assert [j.job_id for j in sim.queue] == [3]
    with pytest.raises(SimulationNotFinishedError, match=r"^3 jobs have not ended at t=1(\.0)?;"):
        sim.result()
    assert sim.step() == Step(5.0, finished=(2,), arrived=(), started=())
    assert sim.finished_jobs == 1 and sim.free_nodes == 2
    assert sim.step() == Step(10.0, finished=(1,), arrived=(), started=(3,))
    assert not sim.queue and [j.start for j in sim.running] == [10.0]
    assert not sim.done
    assert sim.step() == Step(15.0, finished=(3,), arrived=(), started=())
    assert sim.done and sim.step() is None
    assert list(sim.result().jobs["start"]) == [0, 0, 10]
    assert sim.result() is sim.result()


def test_one_event_per_pass_steps_one_event() -> None:
    # Completions of the same second one step each, in start order; an arrival at a time goes
    # before a completion at that time.
    cluster = Cluster("four", FlatTopology(4))
    jobs = [_wj(1, 1, 10, 0), _wj(2, 2, 10, 0), _wj(3, 1, 100, 10)]
    sim = Simulation(cluster, jobs, one_event_per_pass=True)
    got = [sim.step() for _ in range(6)]
    assert got == [
        Step(0.0, finished=(), arrived=(1,), started=(1,)),
        Step(0.0, finished=(), arrived=(2,), started=(2,)),
        Step(10.0, finished=(), arrived=(3,), started=(3,)),
        Step(10.0, finished=(1,), arrived=(), started=()),
        Step(10.0, finished=(2,), arrived=(), started=()),
        Step(110.0, finished=(3,), arrived=(), started=()),
    ]
    assert sim.step() is None


def test_run_after_some_steps_and_progress() -> None:
    cluster = Cluster("four", FlatTopology(4))
    jobs = [_wj(i, 1 + i % 4, 5 + i % 7, float(i)) for i in range(500)]
    reports: list[tuple[int, int]] = []
    sim = Simulation(cluster, jobs, progress=lambda done, total: reports.append((done, total)))
    for _ in range(40):
        sim.step()
    result = sim.run()
    assert_same_result(result, simulate(cluster, jobs))
    assert reports[-1] == (500, 500)
    assert [d for d, _ in reports] == sorted(d for d, _ in reports)
    reported = len(reports)
    assert sim.run() is result and len(reports) == reported


def test_an_empty_workload() -> None:
    sim = Simulation(Cluster("four", FlatTopology(4)), [])
    assert sim.done and sim.step() is None and sim.now == 0.0
    assert sim.result().metrics.jobs == 0


@pytest.fixture(scope="module")
def lublin_jobs(shipped_trace: Path) -> tuple[Cluster, list[WorkloadJob]]:
    cluster = Cluster("lublin", FlatTopology(256))
    jobs, _ = workload_from_swf(read_swf(shipped_trace), cluster, window=(3000, 400))
    return cluster, jobs


@pytest.mark.parametrize(
    OPTIONS,
    [
        ("fcfs", "easy", False, False),
        ("sjf", "strict", True, True),
        ("wfp3", "conservative", False, False),
        ("multifactor", "easy", False, False),
        ("unicep", "none", True, True),
        ("f1", "strict", True, False),
    ],
)
def test_stepping_a_trace_window_equals_simulate(
    lublin_jobs: tuple[Cluster, list[WorkloadJob]],
    order: str,
    backfill: str,
    commit_head: bool,
    one_event_per_pass: bool,
) -> None:
    cluster, jobs = lublin_jobs
    options: dict[str, Any] = {
        "order": order,
        "backfill": backfill,
        "commit_head": commit_head,
        "one_event_per_pass": one_event_per_pass,
        "record_nodes": True,
    }
    sim = Simulation(cluster, jobs, **options)
    steps = step_through(sim, cluster)
    assert sum(len(s.arrived) for s in steps) == len(jobs)
    assert sorted(j for s in steps for j in s.started) == sorted(j.job_id for j in jobs)
    assert sorted(j for s in steps for j in s.finished) == sorted(j.job_id for j in jobs)
    assert_same_result(sim.result(), simulate(cluster, jobs, **options))


@pytest.mark.parametrize("backfill", ["easy", "conservative"])
def test_stepping_a_torus_and_a_tree_equals_simulate(backfill: str) -> None:
    torus = Cluster("t", Torus3DTopology([6, 6, 4], [2, 3, 2]))
    shaped = synthetic_torus_workload(torus, 80, seed=7, load=1.2, max_fraction=0.4)
    tree = load_cluster("slurm16")
    counted = [_wj(i, 1 + (i * 7) % 11, 10 + (i * 37) % 500, float(i * 20)) for i in range(150)]
    for cluster, jobs in ((torus, shaped), (tree, counted)):
        sim = Simulation(cluster, jobs, backfill=backfill, record_nodes=True)
        step_through(sim, cluster)
        whole = simulate(cluster, jobs, backfill=backfill, record_nodes=True)
        assert_same_result(sim.result(), whole)
        if cluster is torus:
            assert sim.result().metrics.fragmentation == whole.metrics.fragmentation is not None


@st.composite
def flat_workloads(draw: st.DrawFn) -> tuple[Cluster, list[WorkloadJob]]:
    size = draw(st.integers(1, 8))
    n = draw(st.integers(0, 25))
    jobs = []
    submit = 0.0
    for i in range(n):
        submit += draw(st.sampled_from([0.0, 0.0, 1.0, 3.0, 10.0]))  # many equal times
        run = float(draw(st.integers(1, 40)))
        walltime = draw(st.one_of(st.none(), st.sampled_from([run, run + 5.0, max(1.0, run - 5)])))
        jobs.append(_wj(i, draw(st.integers(1, size)), run, submit, walltime))
    return Cluster("flat", FlatTopology(size)), jobs


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    workload=flat_workloads(),
    order=st.sampled_from(["fcfs", "sjf", "f1", "wfp3", "unicep", "multifactor"]),
    backfill=st.sampled_from(["none", "easy", "strict", "conservative"]),
    commit_head=st.booleans(),
    one_event_per_pass=st.booleans(),
    kill_at_walltime=st.booleans(),
)
def test_stepping_random_workloads_equals_simulate(
    workload: tuple[Cluster, list[WorkloadJob]],
    order: str,
    backfill: str,
    commit_head: bool,
    one_event_per_pass: bool,
    kill_at_walltime: bool,
) -> None:
    cluster, jobs = workload
    options: dict[str, Any] = {
        "order": order,
        "backfill": backfill,
        "commit_head": commit_head,
        "one_event_per_pass": one_event_per_pass,
        "kill_at_walltime": kill_at_walltime,
        "record_nodes": True,
    }
    sim = Simulation(cluster, jobs, **options)
    steps = step_through(sim, cluster)
    if one_event_per_pass:
        assert all(len(s.arrived) + len(s.finished) == 1 for s in steps)
        assert len(steps) == 2 * len(jobs)
    else:
        times = [s.time for s in steps]
        assert times == sorted(set(times)), "two steps at one time"
    assert_same_result(sim.result(), simulate(cluster, jobs, **options))
