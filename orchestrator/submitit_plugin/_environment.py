"""``submitit.JobEnvironment()`` inside a job of ours: the rank variables every backend exports."""

from __future__ import annotations

import os
import sys

from submitit.core import logger
from submitit.core.job_environment import JobEnvironment

__all__ = ["REQUEUE_CODE", "OrchJobEnvironment"]

REQUEUE_CODE = 3
"""The exit status of a task that checkpointed on the signal before its walltime: the daemon
requeues the attempt (``DaemonConfig.requeue_code``), as the Slurm and PJM backends do."""


class OrchJobEnvironment(JobEnvironment):
    """The job's place among its tasks, from ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
    ``ORCH_NODE_RANK``, ``ORCH_NUM_NODES`` and ``ORCH_JOB_ID`` (submitit's ``job_id`` is ours).

    Active where ``SUBMITIT_EXECUTOR=orch`` (set by :class:`~.OrchExecutor` in the job's ``env``).
    """

    _env = {  # noqa: RUF012 (submitit's own class attribute, a plain dict there)
        "job_id": "ORCH_JOB_ID",
        "num_tasks": "WORLD_SIZE",
        "num_nodes": "ORCH_NUM_NODES",
        "node": "ORCH_NODE_RANK",
        "global_rank": "RANK",
        "local_rank": "LOCAL_RANK",
    }

    @property
    def hostnames(self) -> list[str]:
        """The job's nodes, in node-rank order (the scheduler's node names)."""
        nodes = os.environ.get("ORCH_NODES", "")
        return nodes.split(",") if nodes else [self.hostname]

    def _requeue(self, countdown: int) -> None:
        """Exit with :data:`REQUEUE_CODE`: the daemon, which sent the signal, queues the job again
        (PREEMPTED, then PENDING; no retry spent) and the next attempt resumes from the
        checkpoint submitit just wrote."""
        logger.get_logger().info(
            f"Requeued job {self.job_id} ({countdown} remaining timeouts): exit {REQUEUE_CODE}"
        )
        sys.exit(REQUEUE_CODE)
