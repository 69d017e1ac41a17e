"""Issue 15: clusters that share nodes (cores, GPUs and memory handed out per job).

The invariants are the specification: no core and no GPU index is ever held by two running
jobs at once, no node's memory is overcommitted, each job holds exactly what it asked for on
each node, and whole-node (``--exclusive``) jobs hold idle nodes entirely.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.exceptions import InvalidRequestError
from orchestrator.resources.cluster import cluster_from_mapping, load_cluster
from orchestrator.resources.request import JobRequest
from orchestrator.resources.shares import FreeShares, NodePool
from orchestrator.resources.topology import Block
from orchestrator.scheduling.policies import Backfill
from orchestrator.simulate.engine import Simulation
from orchestrator.simulate.workload import WorkloadJob

GPU_CLUSTER = {
    "name": "gpu-test",
    "topology": "tree",
    "shared": True,
    "switches": [
        {"name": "s1", "nodes": "g[1-2]"},
        {"name": "s2", "nodes": "g[3-4],c1"},
        {"name": "s0", "switches": "s[1-2]"},
    ],
    "groups": [
        {"name": "gpu", "nodes": "g[1-4]", "node": {"cpus": 8, "gpus": 4, "memory_mb": 8000}},
        {"name": "cpu", "nodes": "c1", "node": {"cpus": 16, "gpus": 0, "memory_mb": 16000}},
    ],
}


def gpu_cluster():  # type: ignore[no-untyped-def]
    return cluster_from_mapping(GPU_CLUSTER, "gpu-test")


def test_one_gpu_jobs_pack_onto_one_node_before_the_next() -> None:
    shares = FreeShares(NodePool.of(gpu_cluster()))
    blocks = []
    for _ in range(4):
        block = shares.place(JobRequest(nodes=1, gpus_per_task=1))
        assert block is not None and block.shares is not None
        shares.take(block)
        blocks.append(block)
    # Best fit: all four on the first node, GPUs 0..3, so three nodes stay whole.
    assert {int(b.nodes[0]) for b in blocks} == {0}
    assert sorted(b.shares[0].gpus[0] for b in blocks if b.shares) == [0, 1, 2, 3]
    assert int(np.count_nonzero(shares.idle())) == 4
    # A whole-node job then takes an idle node, never the full one.
    whole = shares.place(JobRequest(nodes=1, exclusive=True))
    assert whole is not None and int(whole.nodes[0]) != 0
    assert whole.shares is not None and whole.shares[0].gpus == (0, 1, 2, 3)


def test_a_gpu_job_never_lands_in_the_cpu_partition_and_memory_defaults_to_a_core_share() -> None:
    cluster = gpu_cluster()
    shares = FreeShares(NodePool.of(cluster))
    cpu_job = shares.place(JobRequest(nodes=1, cpus_per_task=4, partition="cpu"))
    assert cpu_job is not None and cluster.topology.node_name(int(cpu_job.nodes[0])) == "c1"
    assert cpu_job.shares is not None and cpu_job.shares[0].mem_mb == 4000  # 16000 * 4 / 16
    assert shares.place(JobRequest(nodes=1, gpus_per_task=1, partition="cpu")) is None
    with pytest.raises(InvalidRequestError, match="partition"):
        cluster.check_request(JobRequest(nodes=1, partition="nope"))
    with pytest.raises(InvalidRequestError, match="gpus_per_node"):
        cluster.check_request(JobRequest(nodes=1, gpus_per_node=5))
    with pytest.raises(InvalidRequestError, match="gpus_per_task"):
        cluster.check_request(JobRequest(nodes=1, gpus_per_task=1, partition="cpu"))


def test_a_two_node_job_stays_under_one_switch_when_one_holds_it() -> None:
    cluster = gpu_cluster()
    shares = FreeShares(NodePool.of(cluster))
    first = shares.place(JobRequest(nodes=1, gpus_per_task=3))
    assert first is not None
    shares.take(first)  # g1 has one GPU left
    pair = shares.place(JobRequest(nodes=2, gpus_per_task=2))
    assert pair is not None
    names = [cluster.topology.node_name(int(n)) for n in pair.nodes]
    assert names in (["g1", "g2"], ["g3", "g4"]) and "g1" not in names


def test_whole_node_presets_are_not_shared() -> None:
    for name in ("local", "slurm16", "fugaku", "fattree1024"):
        assert not load_cluster(name).shared
    assert load_cluster("abci3").shared


request_strategy = st.builds(
    lambda nodes, tasks, cpus, gpus, per_node, mem, exclusive, partition, run: (
        JobRequest(
            nodes=nodes,
            tasks_per_node=tasks,
            cpus_per_task=cpus,
            gpus_per_task=0 if partition == "cpu" else gpus,
            gpus_per_node=0 if partition == "cpu" else per_node,
            mem_per_node_mb=mem,
            exclusive=exclusive,
            partition=partition,
            walltime_s=float(run + 5),
        ),
        float(run),
    ),
    nodes=st.integers(1, 2),
    tasks=st.integers(1, 2),
    cpus=st.integers(1, 4),
    gpus=st.integers(0, 2),
    per_node=st.integers(0, 4),
    mem=st.sampled_from([0, 0, 500, 3000]),
    exclusive=st.booleans(),
    partition=st.sampled_from(["", "gpu", "cpu"]),
    run=st.integers(1, 50),
)


def check_no_overlap(running: tuple, cluster) -> None:  # type: ignore[no-untyped-def,type-arg]
    pool = NodePool.of(cluster)
    cores: dict[int, set[int]] = defaultdict(set)
    gpus: dict[int, set[int]] = defaultdict(set)
    mem: dict[int, int] = defaultdict(int)
    for job in running:
        block: Block = job.block
        request: JobRequest = job.request
        assert block.shares is not None and len(block.shares) == block.size == request.node_count
        group = cluster.group(request.partition)
        assert np.isin(block.nodes, group.nodes).all(), "outside its partition"
        for node, share in zip(block.nodes.tolist(), block.shares, strict=True):
            if request.exclusive:
                assert share == pool.whole(node)
            else:
                assert len(share.cpus) == request.cpus_on_node
                assert len(share.gpus) == request.gpus_on_node
            assert not cores[node] & set(share.cpus), f"core given twice on node {node}"
            assert not gpus[node] & set(share.gpus), f"GPU given twice on node {node}"
            assert max(share.cpus, default=0) < pool.cpus[node]
            assert max(share.gpus, default=-1) < pool.gpus[node]
            cores[node] |= set(share.cpus)
            gpus[node] |= set(share.gpus)
            mem[node] += share.mem_mb
            assert mem[node] <= pool.mem[node], "memory overcommitted"


@settings(max_examples=150, deadline=None)
@given(
    jobs=st.lists(st.tuples(request_strategy, st.integers(0, 30)), min_size=1, max_size=25),
    backfill=st.sampled_from(list(Backfill)),
)
def test_no_core_or_gpu_is_ever_held_twice(jobs, backfill) -> None:  # type: ignore[no-untyped-def]
    cluster = gpu_cluster()
    workload = []
    for i, ((drawn, run), submit) in enumerate(jobs):
        request = JobRequest(**{**_fields(drawn), "submit_time": float(submit)})
        try:
            cluster.check_request(request)
        except InvalidRequestError:
            continue
        workload.append(WorkloadJob(i, request, run))
    if not workload:
        return
    sim = Simulation(cluster, workload, backfill=backfill)
    while sim.step() is not None:
        check_no_overlap(sim.running, cluster)
    result = sim.result()
    assert len(result.jobs) == len(workload)  # every job ran


def _fields(request: JobRequest) -> dict:  # type: ignore[type-arg]
    names = [
        "nodes",
        "tasks_per_node",
        "cpus_per_task",
        "gpus_per_task",
        "gpus_per_node",
        "mem_per_node_mb",
        "exclusive",
        "partition",
        "walltime_s",
    ]
    return {name: getattr(request, name) for name in names}


@pytest.mark.parametrize("exclusive,expected_waves", [(False, 1), (True, 4)])
def test_packing_in_simulation(exclusive: bool, expected_waves: int) -> None:
    """16 one-GPU jobs on 4 nodes x 4 GPUs: packed they all start at once; whole nodes take
    four waves."""
    cluster = gpu_cluster()
    workload = [
        WorkloadJob(
            i,
            JobRequest(nodes=1, gpus_per_task=1, exclusive=exclusive, walltime_s=10.0),
            10.0,
        )
        for i in range(16)
    ]
    sim = Simulation(cluster, workload)
    result = sim.run()
    starts = sorted(set(result.jobs["start"]))
    assert len(starts) == expected_waves


def test_named_resource_types_become_requests_that_pack() -> None:
    """TSUBAME's ``-l node_q=2`` and ABCI's ``rt_HG``: one unit per node; eight rt_HG fit one
    ABCI node (8 GPUs, 8 x 16 of its 192 cores)."""
    from orchestrator.daemon.spec import JobSpec, apply_resource_type

    tsubame = load_cluster("tsubame4")
    spec = JobSpec.from_mapping({"argv": ["true"], "nodes": 1, "resource_type": "node_q=2"})
    request = apply_resource_type(spec, tsubame.resource_types, tsubame.name).request
    assert (request.nodes, request.cpus_on_node, request.gpus_on_node) == (2, 48, 1)
    assert request.mem_per_node_mb == 192 * 1024 and not request.exclusive
    tsubame.check_request(request)
    abci = load_cluster("abci3")
    spec = JobSpec.from_mapping({"argv": ["true"], "nodes": 1, "resource_type": "rt_HG"})
    unit = apply_resource_type(spec, abci.resource_types, abci.name).request
    shares = FreeShares(NodePool.of(abci))
    placed = []
    for _ in range(9):
        block = shares.place(unit)
        assert block is not None
        shares.take(block)
        placed.append(int(block.nodes[0]))
    assert placed == [0] * 8 + [1]
    whole = JobSpec.from_mapping({"argv": ["true"], "nodes": 1, "resource_type": "rt_HF=2"})
    assert apply_resource_type(whole, abci.resource_types, abci.name).request.exclusive


@settings(max_examples=60, deadline=None)
@given(
    program=st.lists(
        st.tuples(st.booleans(), request_strategy, st.integers(0, 30)), min_size=1, max_size=30
    )
)
def test_idle_at_agrees_with_idle_after_any_takes_and_gives(program) -> None:  # type: ignore[no-untyped-def]
    cluster = gpu_cluster()
    shares = FreeShares(NodePool.of(cluster))
    held: list[Block] = []
    everyone = np.arange(cluster.size)
    for take, (drawn, _run), pick in program:
        request = JobRequest(**_fields(drawn))
        if take:
            try:
                cluster.check_request(request)
            except InvalidRequestError:
                continue
            block = shares.place(request)
            if block is not None:
                shares.take(block)
                held.append(block)
        elif held:
            block = held.pop(pick % len(held))
            shares.give(block)
            assert (shares.idle_at(block.nodes) == shares.idle()[block.nodes]).all()
        assert (shares.idle_at(everyone) == shares.idle()).all()
