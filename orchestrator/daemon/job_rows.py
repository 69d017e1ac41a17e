"""Conversions between validated submissions, store rows and the scheduler's job requests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from orchestrator.daemon.spec import JobSpec, format_dependency
from orchestrator.exceptions import InvalidRequestError
from orchestrator.resources.request import JobRequest
from orchestrator.scheduling.job import JobState
from orchestrator.store import Store

__all__ = ["expand_dependency", "job_row", "regroup", "request_of"]

Deps = tuple[tuple[str, int], ...]


def request_of(row: dict[str, Any]) -> JobRequest:
    """The scheduler's request of a stored job."""
    return JobRequest(
        nodes=row["nodes"],
        shape=row["shape"],
        tasks_per_node=row["tasks_per_node"],
        cpus_per_task=row["cpus_per_task"],
        gpus_per_task=row["gpus_per_task"],
        gpus_per_node=row["gpus_per_node"] or 0,
        mem_per_node_mb=row["mem_per_node_mb"],
        exclusive=bool(row["exclusive"]),
        partition=row["partition"] or "",
        walltime_s=row["walltime_s"],
        estimate_s=row["estimate_s"],
        priority=row["priority"],
        user=row["user"],
        account=row["account"],
        submit_time=row["submit_time"],
        name=row["name"],
    )


def job_row(
    spec: JobSpec, deps: Deps, index: int | None, now: float, cluster_id: int
) -> dict[str, Any]:
    """The ``jobs`` row of one submission (one array element when ``index`` is given)."""
    req = spec.request
    env = dict(spec.env)
    if index is not None:
        env["ORCH_ARRAY_TASK_ID"] = str(index)
    return {
        "cluster_id": cluster_id,
        "name": req.name,
        "user": req.user,
        "account": req.account,
        "argv": list(spec.argv) if spec.argv is not None else None,
        "script": spec.script,
        "env": env,
        "workdir": spec.workdir,
        "nodes": req.nodes,
        "shape": str(req.shape) if req.shape is not None else None,
        "tasks_per_node": req.tasks_per_node,
        "cpus_per_task": req.cpus_per_task,
        "gpus_per_task": req.gpus_per_task,
        "gpus_per_node": req.gpus_per_node,
        "mem_per_node_mb": req.mem_per_node_mb,
        "exclusive": req.exclusive,
        "partition": req.partition,
        "walltime_s": req.walltime_s,
        "estimate_s": req.estimate_s,
        "priority": req.priority,
        "submit_time": now,
        "array_index": index,
        "array_limit": spec.array.limit if spec.array else None,
        "dependency": format_dependency(deps) if deps else None,
        "max_retries": spec.retries,
        "attempts": 0,
        "not_before": spec.begin or 0.0,
        "state": (JobState.HELD if spec.hold else JobState.PENDING).value,
        "reason": "submitted held" if spec.hold else "submitted",
    }


def expand_dependency(store: Store, spec: JobSpec, field_name: str) -> Deps:
    """Check that every dependency exists; an array's id stands for all its elements (Slurm).

    Raises:
        InvalidRequestError: naming ``field_name``, for a job id that does not exist.
    """
    if not spec.dependency:
        return ()
    wanted = {job_id for _, job_id in spec.dependency}
    rows = {r["id"]: r for r in store.list_jobs(ids=wanted)}
    out: list[tuple[str, int]] = []
    for kind, job_id in spec.dependency:
        row = rows.get(job_id)
        if row is None:
            raise InvalidRequestError(
                field_name,
                format_dependency(spec.dependency),
                f"no job {job_id}",
                "afterok:<an existing job id>",
            )
        if row["array_id"] == job_id:
            out.extend((kind, r["id"]) for r in store.list_jobs(array_id=job_id))
        else:
            out.append((kind, job_id))
    return tuple(out)


def regroup(ids: Iterable[int], sizes: Sequence[int]) -> list[list[int]]:
    """Split a flat id list into consecutive groups of ``sizes``."""
    flat = list(ids)
    out, k = [], 0
    for size in sizes:
        out.append(flat[k : k + size])
        k += size
    return out
