"""The rank variables every backend gives each task (standard library only).

Called where a task starts: in the daemon (local backend), in a Ray actor, or in the node-side
supervisor a batch system starts (Slurm, PJM), so a task sees the same variables whichever
backend started it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["affinity_cpus", "binding_environment", "rank_environment", "task_binding"]


def rank_environment(
    nodes: Sequence[str], tasks_per_node: int, node_rank: int, local_rank: int
) -> dict[str, str]:
    """The per-task variables: ours (``ORCH_*``) and those ``torch.distributed``'s ``env://`` reads.

    Ranks are numbered node by node in the order of ``nodes`` (our allocator's order, not the
    batch system's), ``tasks_per_node`` consecutive ranks per node.
    """
    rank = node_rank * tasks_per_node + local_rank
    return {
        "ORCH_NODE_RANK": str(node_rank),
        "ORCH_NODENAME": nodes[node_rank],
        "ORCH_TASK_RANK": str(rank),
        "RANK": str(rank),
        "LOCAL_RANK": str(local_rank),
        "GROUP_RANK": str(node_rank),
    }


def task_binding(node_items: Sequence[int], local_rank: int, per_task: int) -> list[int]:
    """The share of one task in what its node was given: GPU or core indices.

    ``node_items`` are the node's indices in order; with ``per_task`` > 0 task ``local_rank``
    gets the ``per_task`` indices from ``local_rank * per_task`` on (Slurm's
    ``--gpus-per-task`` binding); with ``per_task`` 0 (GPUs asked per node, not per task) every
    task sees all of them, as Slurm's ``--gpus-per-node`` does.
    """
    items = list(node_items)
    if per_task <= 0:
        return items
    start = local_rank * per_task
    return items[start : start + per_task]


def binding_environment(
    gpus: Sequence[int] | None, cpus: Sequence[int], cpus_per_task: int
) -> dict[str, str]:
    """The variables that bind one task: ``CUDA_VISIBLE_DEVICES`` and ``ORCH_GPUS`` (its GPU
    indices; empty when it has none, so it sees no GPU), ``ORCH_CPUS`` (its declared core
    indices) and ``OMP_NUM_THREADS``. ``gpus`` None: the engine binds GPUs itself (Slurm).
    """
    env = {"OMP_NUM_THREADS": str(max(1, len(cpus) if cpus else cpus_per_task))}
    if gpus is not None:
        text = ",".join(str(g) for g in gpus)
        env["CUDA_VISIBLE_DEVICES"] = text
        env["ORCH_GPUS"] = text
    if cpus:
        env["ORCH_CPUS"] = ",".join(str(c) for c in cpus)
    return env


def affinity_cpus(cpus: Sequence[int], available: Sequence[int]) -> list[int]:
    """The real CPUs a task whose declared cores are ``cpus`` is pinned to.

    Declared core ``c`` maps onto ``available[c % len(available)]`` (``available``: the CPUs
    this process may run on, sorted): a preset may declare more cores than the machine has (the
    local GPU preset declares 2 nodes of 8 cores on this 2-CPU machine), and tasks whose
    declared cores differ modulo the real count then do not share a CPU.
    """
    return sorted({available[int(c) % len(available)] for c in cpus})
