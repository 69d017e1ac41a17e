"""GPUs and memory on the Ray backend: each task's share of its node's bundle, the GPUs Ray gives
its actor (``CUDA_VISIBLE_DEVICES`` as Ray set it, ``ORCH_GPUS``), a job asking more than a
raylet has, and jobs sharing one node (``exclusive`` false) beside each other but not beside a
whole-node job.

The session's Ray cluster declares 4 GPUs on each raylet (``tests/ray_cluster_session.py``):
Ray counts and hands out GPUs that this machine need not have, so these tests run anywhere.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launchers.ray import RayBackend
from launchers.ray.cluster import (
    NODE_SHARE,
    PoolNode,
    TaskShare,
    node_bundle,
    shortfall,
    task_gpus,
    task_shares,
)
from orchestrator.backends.contract import Handle, LaunchSpec, Liveness
from orchestrator.exceptions import BackendError
from orchestrator.resources.cluster import Cluster, cluster_from_mapping
from tests.ray_cluster_session import GPUS_PER_NODE, NAMESPACE, RayTestCluster

MB = 2**20

# Each task writes its GPU variables to <folder>/<rank>.
REPORT = """
import json, os, sys
names = ("CUDA_VISIBLE_DEVICES", "ORCH_GPUS", "LOCAL_RANK")
with open(os.path.join(sys.argv[1], os.environ["RANK"]), "w") as f:
    json.dump({k: os.environ.get(k) for k in names}, f)
"""
# The same, then waits until the file named by its second argument exists.
REPORT_AND_WAIT = (
    REPORT + "import time\nwhile not os.path.exists(sys.argv[2]):\n    time.sleep(0.05)\n"
)


def _spec(job_id: int, nodes: list[str], folder: Path, **kw: Any) -> LaunchSpec:
    return LaunchSpec(job_id, 1, [sys.executable, "-c", REPORT, str(folder)], None, nodes, **kw)


# -- pure parts ---------------------------------------------------------------------------------


def test_gpus_per_task_go_to_each_task_and_per_node_ones_are_split_or_given_to_rank_0() -> None:
    assert task_gpus(1, 0, 2) == [1, 1]
    assert task_gpus(2, 0, 3) == [2, 2, 2]
    assert task_gpus(0, 4, 2) == [2, 2]  # divides: split evenly
    assert task_gpus(0, 4, 4) == [1, 1, 1, 1]
    assert task_gpus(0, 3, 2) == [3, 0]  # does not divide: all to local rank 0
    assert task_gpus(0, 1, 4) == [1, 0, 0, 0]
    assert task_gpus(0, 0, 2) == [0, 0]


def test_a_node_bundle_holds_what_its_tasks_take() -> None:
    spec = LaunchSpec(
        1, 1, ["true"], None, ["r1", "r2"], tasks_per_node=3, cpus_per_task=2, mem_per_node_mb=10
    )
    shares = task_shares(spec)
    # The memory's bytes that do not divide by 3 go to local rank 0; none is lost.
    part = 10 * MB // 3
    assert shares == [
        TaskShare(2, 0, part + 10 * MB % 3),
        TaskShare(2, 0, part),
        TaskShare(2, 0, part),
    ]
    assert sum(s.memory_bytes for s in shares) == 10 * MB
    # Resources of zero are left out of the bundle; memory in bytes, under Ray's name.
    assert node_bundle("r2", spec) == {"orch_node:r2": 1.0, "CPU": 6.0, "memory": 10.0 * MB}
    gpus = LaunchSpec(1, 1, ["true"], None, ["r1"], tasks_per_node=2, gpus_per_node=3)
    assert [s.gpus for s in task_shares(gpus)] == [3, 0]
    assert node_bundle("r1", gpus) == {"orch_node:r1": 1.0, "CPU": 2.0, "GPU": 3.0}


def test_a_job_sharing_its_nodes_asks_a_share_of_each_and_a_whole_node_job_all_of_it() -> None:
    shared = LaunchSpec(1, 1, ["true"], None, ["r1"], gpus_per_task=1, exclusive=False)
    assert node_bundle("r1", shared) == {"orch_node:r1": NODE_SHARE, "CPU": 1.0, "GPU": 1.0}
    whole = LaunchSpec(1, 1, ["true"], None, ["r1"], gpus_per_task=1)
    assert node_bundle("r1", whole)["orch_node:r1"] == 1.0
    # Ray counts resources in units of 0.0001: the share is a whole number of them, and 1000
    # shared jobs fit one node.
    units = NODE_SHARE * 10_000
    assert units == round(units) >= 1
    assert round(1 / NODE_SHARE) == 1000


def test_shortfall_names_what_a_raylet_lacks() -> None:
    node = PoolNode("r1", "id", True, "10.0.0.1", cpus=2, gpus=4, memory_mb=1024)
    exactly = {"orch_node:r1": 1.0, "CPU": 2.0, "GPU": 4.0, "memory": 1024.0 * MB}
    assert shortfall(node, exactly) is None
    why = shortfall(node, {"CPU": 3.0, "GPU": 5.0, "memory": 2048.0 * MB})
    assert why == (
        "raylet orch_node:r1 cannot hold the job's bundle: it asks 3 CPU (it offers 2), "
        "5 GPU (it offers 4), 2048 MB of memory (it offers 1024 MB)"
    )
    assert shortfall(node, {"CPU": 1.0}) is None


# -- on the Ray cluster -------------------------------------------------------------------------


def _ray_cluster_of(names: list[str]) -> Cluster:
    return cluster_from_mapping(
        {
            "name": "ray",
            "topology": "flat",
            "node_names": ",".join(names),
            "node": {"cpus": 2, "gpus": GPUS_PER_NODE},
        }
    )


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _run(backend: RayBackend, handles: dict[int, Handle]) -> None:
    """Wait for the jobs to end, check they succeeded and free their placement groups."""

    def ended() -> bool:
        return all(r.liveness is Liveness.EXITED for r in backend.poll(handles).values())

    _wait(ended, "the jobs to end", 120)
    results = backend.poll(handles)
    for job_id, handle in handles.items():
        err = Path(backend.output_paths(job_id)[1]).read_text()
        assert not results[job_id].any_failed, err
        backend.forget(handle)


def _reports(folder: Path) -> dict[int, dict[str, str]]:
    return {int(p.name): json.loads(p.read_text()) for p in folder.iterdir()}


def test_two_tasks_asking_one_gpu_each_see_one_gpu_each_not_the_same(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    from ray.util.placement_group import get_placement_group, placement_group_table

    backend = RayBackend(tmp_path / "state", _ray_cluster_of(["r1", "r2", "r3", "r4"]))
    out = tmp_path / "out"
    out.mkdir()
    # A value of the daemon's or the job's own never reaches the task: Ray's does.
    spec = _spec(
        1,
        ["r2"],
        out,
        tasks_per_node=2,
        gpus_per_task=1,
        mem_per_node_mb=64,
        env={"CUDA_VISIBLE_DEVICES": "7"},
    )
    handle = backend.start(spec)
    bundle = placement_group_table(get_placement_group(handle["pg_name"]))["bundles"][0]
    assert bundle == {"orch_node:r2": 1.0, "CPU": 2.0, "GPU": 2.0, "memory": 64.0 * MB}
    _run(backend, {1: handle})
    seen = _reports(out)
    assert sorted(seen) == [0, 1]
    gpus = [seen[rank]["CUDA_VISIBLE_DEVICES"] for rank in (0, 1)]
    for rank in (0, 1):
        assert seen[rank]["ORCH_GPUS"] == seen[rank]["CUDA_VISIBLE_DEVICES"], seen
        assert len(seen[rank]["ORCH_GPUS"].split(",")) == 1, seen  # one GPU each
        assert int(seen[rank]["ORCH_GPUS"]) in range(GPUS_PER_NODE), seen
    assert gpus[0] != gpus[1], seen  # not the same one


def test_gpus_per_node_go_to_rank_0_when_they_do_not_divide_and_none_is_none(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    backend = RayBackend(tmp_path / "state", _ray_cluster_of(["r1", "r2", "r3", "r4"]))
    with_gpus, without = tmp_path / "with", tmp_path / "without"
    with_gpus.mkdir()
    without.mkdir()
    handles = {
        1: backend.start(_spec(1, ["r3"], with_gpus, tasks_per_node=2, gpus_per_node=3)),
        # No GPU asked: the task sees none, whatever the job's environment said.
        2: backend.start(_spec(2, ["r4"], without, env={"CUDA_VISIBLE_DEVICES": "0"})),
    }
    _run(backend, handles)
    seen = _reports(with_gpus)
    assert len(seen[0]["ORCH_GPUS"].split(",")) == 3, seen
    assert seen[0]["CUDA_VISIBLE_DEVICES"] == seen[0]["ORCH_GPUS"], seen
    assert seen[1]["ORCH_GPUS"] == "" and seen[1]["CUDA_VISIBLE_DEVICES"] == "", seen
    assert _reports(without)[0] == {"CUDA_VISIBLE_DEVICES": "", "ORCH_GPUS": "", "LOCAL_RANK": "0"}


def test_a_job_asking_more_gpus_than_a_raylet_has_is_refused_at_once(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    from ray.util.placement_group import get_placement_group

    backend = RayBackend(tmp_path / "state", _ray_cluster_of(["r1", "r2", "r3", "r4"]))
    spec = _spec(5, ["r1", "r2"], tmp_path, tasks_per_node=2, gpus_per_task=GPUS_PER_NODE // 2 + 1)
    started = time.monotonic()
    with pytest.raises(BackendError) as e:
        backend.start(spec)
    assert time.monotonic() - started < 10  # not after start_timeout (60 s)
    assert str(e.value) == (
        f"job 5: raylet orch_node:r1 cannot hold the job's bundle: it asks 6 GPU "
        f"(it offers {GPUS_PER_NODE})"
    )
    with pytest.raises(ValueError):  # nothing was made
        get_placement_group(backend._pg_name(5, 1))


def test_a_job_whose_gpus_someone_else_holds_stays_unplaced_then_fails_clearly(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    import ray
    from ray.util.placement_group import get_placement_group
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from launchers.ray.cluster import fetch_nodes

    @ray.remote
    class Holder:
        def ping(self) -> bool:
            return True

    # Another user's actor holds every GPU of r4 (not its orch_node resource: r4 looks free).
    node_id = fetch_nodes()["r4"].node_id
    holder = Holder.options(  # type: ignore[attr-defined]
        num_cpus=0,
        num_gpus=GPUS_PER_NODE,
        namespace=NAMESPACE,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
    ).remote()
    try:
        assert ray.get(holder.ping.remote(), timeout=60)
        backend = RayBackend(
            tmp_path / "state", _ray_cluster_of(["r1", "r2", "r3", "r4"]), start_timeout_s=3.0
        )
        spec = _spec(6, ["r4"], tmp_path, gpus_per_task=1)
        with pytest.raises(BackendError, match=r"did not place its bundles on \['r4'\]") as e:
            backend.start(spec)
        assert "each asks 1 CPU, 1 GPU" in str(e.value)
        with pytest.raises(ValueError):  # its placement group was removed
            get_placement_group(backend._pg_name(6, 1))
    finally:
        ray.kill(holder)


def test_two_jobs_sharing_a_node_run_at_once_on_gpus_of_their_own_and_keep_a_whole_node_job_off(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    import ray
    from ray.util.placement_group import (
        get_placement_group,
        placement_group,
        placement_group_table,
        remove_placement_group,
    )

    backend = RayBackend(tmp_path / "state", _ray_cluster_of(["r1", "r2", "r3", "r4"]))
    # Ray frees an earlier test's placement group a moment after its removal.
    _wait(lambda: backend.unavailable_nodes() == frozenset(), "earlier tests' nodes to be free")
    go = tmp_path / "go"
    folders = {1: tmp_path / "job1", 2: tmp_path / "job2"}
    handles: dict[int, Handle] = {}
    for job_id, folder in folders.items():
        folder.mkdir()
        # 1 task x 1 CPU x 1 GPU each, on the same node r3: together both CPUs of r3.
        argv = [sys.executable, "-c", REPORT_AND_WAIT, str(folder), str(go)]
        spec = LaunchSpec(job_id, 1, argv, None, ["r3"], gpus_per_task=1, exclusive=False)
        handles[job_id] = backend.start(spec)
    bundle = placement_group_table(get_placement_group(handles[2]["pg_name"]))["bundles"][0]
    assert bundle == {"orch_node:r3": NODE_SHARE, "CPU": 1.0, "GPU": 1.0}
    # Both run at once: each has started and waits for the file only the test makes.
    _wait(lambda: all((f / "0").exists() for f in folders.values()), "both jobs to run")
    assert [r.liveness for r in backend.poll(handles).values()] == [Liveness.RUNNING] * 2

    # A node that runs only our own jobs is still ours to give (our allocator knows what of it
    # is free); one where someone else holds a share too is not.
    assert "r3" not in backend.unavailable_nodes()
    other = placement_group([{"orch_node:r3": NODE_SHARE}])  # another daemon's shared job
    try:
        ray.get(other.ready(), timeout=30)
        _wait(lambda: "r3" in backend.unavailable_nodes(), "r3 to be seen shared with others")
    finally:
        remove_placement_group(other)
    _wait(lambda: "r3" not in backend.unavailable_nodes(), "the other's share to be released")

    # A whole-node job on r3 does not start while they hold it. It asks no CPU and 1 GPU of the
    # 2 free there: only the node's orch_node resource, all of it, keeps it out.
    backend.start_timeout_s = 3.0
    whole = LaunchSpec(3, 1, ["true"], None, ["r3"], cpus_per_task=0, gpus_per_task=1)
    with pytest.raises(BackendError, match=r"did not place its bundles on \['r3'\]") as e:
        backend.start(whole)
    assert "each asks 1 GPU:" in str(e.value)
    assert [r.liveness for r in backend.poll(handles).values()] == [Liveness.RUNNING] * 2

    go.touch()
    _run(backend, handles)
    seen = [_reports(folder)[0] for folder in folders.values()]
    for report in seen:
        assert report["ORCH_GPUS"] == report["CUDA_VISIBLE_DEVICES"], seen
        assert int(report["ORCH_GPUS"]) in range(GPUS_PER_NODE), seen  # one GPU each
    assert seen[0]["ORCH_GPUS"] != seen[1]["ORCH_GPUS"], seen  # not the same one
    # Once they are released, the whole-node job starts there (it waits for Ray to free them).
    backend.start_timeout_s = 60.0
    _run(backend, {3: backend.start(LaunchSpec(3, 2, ["true"], None, ["r3"], cpus_per_task=0))})
