"""Issue 15: how one task's share of its node's GPUs and cores is chosen and exported."""

from __future__ import annotations

from orchestrator.backends.contract import LaunchSpec
from orchestrator.backends.jobfolder import task_binding_environment
from orchestrator.nodeside.rank_env import affinity_cpus, task_binding


def spec(**fields: object) -> LaunchSpec:
    return LaunchSpec(job_id=1, attempt=1, argv=["true"], script=None, **fields)  # type: ignore[arg-type]


def test_per_task_gpus_are_consecutive_slices_and_per_node_gpus_are_seen_by_all() -> None:
    assert [task_binding((4, 5, 6, 7), r, 2) for r in (0, 1)] == [[4, 5], [6, 7]]
    assert [task_binding((2, 3), r, 0) for r in (0, 1)] == [[2, 3], [2, 3]]


def test_declared_cores_map_onto_the_real_cpus_modulo_their_count() -> None:
    assert affinity_cpus([0, 1], [0, 1]) == [0, 1]
    assert affinity_cpus([5], [0, 1]) == [1]
    assert affinity_cpus([2, 4], [3, 7]) == [3]  # only CPUs 3 and 7 may be used


def test_the_environment_of_each_task() -> None:
    two_nodes = spec(
        nodes=["a", "b"],
        tasks_per_node=2,
        cpus_per_task=2,
        gpus_per_task=1,
        node_gpus=((0, 1), (2, 3)),
        node_cpus=((0, 1, 2, 3), (4, 5, 6, 7)),
    )
    env = task_binding_environment(two_nodes, 1, 1)
    assert env == {
        "CUDA_VISIBLE_DEVICES": "3",
        "ORCH_GPUS": "3",
        "ORCH_CPUS": "6,7",
        "OMP_NUM_THREADS": "2",
    }
    # Asked for no GPU on a cluster that has them: sees none (an empty list, not unset).
    no_gpu = spec(nodes=["a"], node_gpus=((),), node_cpus=((3,),))
    assert task_binding_environment(no_gpu, 0, 0)["CUDA_VISIBLE_DEVICES"] == ""
    # Whole nodes without GPUs: nothing to bind, the environment is left alone.
    assert task_binding_environment(spec(nodes=["a"]), 0, 0) == {}
