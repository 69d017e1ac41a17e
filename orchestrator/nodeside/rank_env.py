"""The rank variables every backend gives each task (standard library only).

Called where a task starts: in the daemon (local backend), in a Ray actor, or in the node-side
supervisor a batch system starts (Slurm, PJM), so a task sees the same variables whichever
backend started it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["rank_environment"]


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
