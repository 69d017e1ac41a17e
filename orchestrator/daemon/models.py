"""The API's requests and responses as pydantic models: one source for validation, the field
errors' names and examples, and the OpenAPI document.

A submission is validated in two steps: :class:`JobSubmission` checks the shape (known fields,
JSON types, ranges, lengths); :meth:`orchestrator.daemon.spec.JobSpec.from_mapping` then checks
what needs the text rules or a parser (array, dependency, durations). Both raise
:class:`~orchestrator.exceptions.InvalidRequestError` naming the field, so the API answers the
same error body whichever step refused.

Responses are documented by models too; the handlers build plain dictionaries (a listing of
10,000 jobs is serialised without a validation pass) and a test checks that live responses
conform to these models.
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

__all__ = [
    "ActionResult",
    "BatchSubmission",
    "ErrorBody",
    "Health",
    "JobDocument",
    "JobList",
    "JobSubmission",
    "Layout",
    "OutputSlice",
    "Status",
    "SubmitResult",
    "TaskUsageDocument",
    "example_of",
]

INT32 = 2**31
Int32 = Annotated[StrictInt, Field(ge=-INT32, lt=INT32)]


def _field(description: str, example: Any, **constraints: Any) -> Any:
    return Field(None, description=description, examples=[example], **constraints)


class JobSubmission(BaseModel):
    """One job, or one array of jobs (field ``array``). JSON ``null`` means "not given"."""

    model_config = ConfigDict(extra="forbid", strict=True)

    argv: list[StrictStr] | None = _field(
        "The command and its arguments, run without a shell (give argv or script).",
        ["python", "train.py"],
        min_length=1,
    )
    script: StrictStr | None = _field(
        "A script run by its #! line (else /bin/sh); at most 1 MiB.", "#!/bin/sh\necho hi"
    )
    name: StrictStr | None = _field("Job name (at most 256 characters).", "train", max_length=256)
    nodes: Int32 | None = _field("Number of nodes (or give shape).", 2)
    shape: StrictStr | None = _field(
        "PJM-style node shape on a torus3d cluster.", "2x2x2:torus", max_length=256
    )
    tasks_per_node: Int32 | None = _field("Processes per node (default 1).", 1)
    cpus_per_task: Int32 | None = _field("CPUs per task (default 1).", 1)
    gpus_per_task: Int32 | None = _field("GPUs per task (default 0).", 0)
    mem_per_node_mb: Int32 | None = _field(
        "Memory per node in MB (default 0: on a shared cluster, the node's memory in "
        "proportion to the cores asked).",
        1000,
    )
    gpus_per_node: Int32 | None = _field("GPUs per node, not tied to tasks (default 0).", 4)
    gpus: Int32 | None = _field("GPUs in all, spread evenly over the nodes (Slurm's --gpus).", 8)
    gres: StrictStr | None = _field(
        "Slurm's --gres for GPUs: gpu:N or gpu:TYPE:N per node.", "gpu:2", max_length=64
    )
    mem: StrictStr | StrictInt | None = _field(
        "Memory per node with a unit (K, M, G, T; 1024 apart) or MB.", "4G"
    )
    mem_per_gpu: StrictStr | StrictInt | None = _field(
        "Memory per GPU, as mem; the node gets it times its GPUs.", "16G"
    )
    exclusive: StrictBool | None = _field(
        "Whole nodes on a cluster that shares nodes (whole-node clusters always give them).",
        True,
    )
    partition: StrictStr | None = _field(
        "Node group (Slurm partition) to run in (default: the cluster's first).",
        "gpu",
        max_length=128,
    )
    resource_type: StrictStr | None = _field(
        "A named resource type of the cluster's preset, NAME or NAME=N (N of them, one per "
        "node), as qsub -l NAME=N on TSUBAME or ABCI.",
        "rt_HG=1",
        max_length=128,
    )
    time: StrictStr | StrictFloat | StrictInt | None = _field(
        "Walltime limit: seconds or [d-]h:m:s.", "10:00"
    )
    estimate: StrictStr | StrictFloat | StrictInt | None = _field(
        "Runtime estimate (default: the time).", "5:00"
    )
    priority: Int32 | None = _field("Priority (larger first under multifactor).", 0)
    user: StrictStr | None = _field(
        "Ignored but checked: the daemon files a job under the caller it authenticated (the "
        "daemon's owner, or in shared mode the user the socket or the token says).",
        "alice",
        max_length=128,
    )
    account: StrictStr | None = _field("Account charged.", "proj1", max_length=128)
    array: StrictStr | None = _field(
        "Array indices, Slurm syntax, %N = at most N at once.", "0-99%8", max_length=10_000
    )
    dependency: StrictStr | None = _field(
        "afterok|afterany|afternotok:ID[:ID],...", "afterok:12", max_length=100_000
    )
    retries: StrictInt | None = _field(
        "Times to requeue a failed attempt (0-100).", 2, ge=0, le=100
    )
    hold: StrictBool | None = _field("Submit held (release to run).", True)
    begin: StrictStr | StrictFloat | StrictInt | None = _field(
        "Earliest start (as sbatch --begin): now+N[minutes|hours|days], a local time "
        "YYYY-MM-DDTHH:MM[:SS] or HH:MM[:SS], or epoch seconds.",
        "now+1hour",
    )
    env: dict[StrictStr, StrictStr] | None = _field(
        "Extra environment variables (string to string).", {"SEED": "1"}
    )
    workdir: StrictStr | None = _field(
        "Absolute working directory (default: the job folder).", "/tmp", max_length=4096
    )


@functools.cache
def example_of(name: str) -> str:
    """The documented example of a submission field, as text for an error's ``example``."""
    info = JobSubmission.model_fields.get(name)
    if info is None or not info.examples:
        return '{"argv": ["true"], "nodes": 1}'
    value = info.examples[0]
    return value if isinstance(value, str) else json.dumps(value)


class BatchSubmission(BaseModel):
    """Many jobs, stored all or none."""

    model_config = ConfigDict(extra="forbid", strict=True)

    jobs: list[JobSubmission] = Field(min_length=1, max_length=10_000)


class SubmitResult(BaseModel):
    """The ids given: a list for one job (one id, or one per array element), a list of such
    lists for a batch."""

    job_ids: list[int] | list[list[int]]


class ActionResult(BaseModel):
    id: int
    state: str


class Event(BaseModel):
    time: float
    old_state: str | None
    new_state: str
    reason: str | None


class Allocation(BaseModel):
    attempt: int
    node: str
    allocated_at: float
    released_at: float | None


class TaskUsageDocument(BaseModel):
    """What one task used, as the kernel counted it for the task's process (``wait4``)."""

    cpu_s: float | None = Field(None, description="User plus system CPU seconds")
    max_rss_mb: float | None = Field(None, description="Peak resident set size, MB (2**20 B)")


class JobDocument(BaseModel):
    """A job as the API shows it (``events``, ``allocations`` and the output paths only on
    ``GET /api/v1/jobs/{job_id}``)."""

    id: int
    display_id: str
    name: str
    user: str
    account: str
    state: str
    reason: str | None
    nodes: int | None
    shape: str | None
    tasks_per_node: int
    cpus_per_task: int
    gpus_per_task: int
    gpus_per_node: int
    mem_per_node_mb: int
    exclusive: bool
    partition: str
    time: float | None
    priority: int
    submit_time: float
    start_time: float | None
    end_time: float | None
    exit_code: int | None
    cpu_time_s: float | None = Field(
        None,
        description="CPU seconds (user + system) of the attempt that ended the job, summed "
        "over its tasks; null when not known (not ended, or stored before accounting)",
    )
    max_rss_mb: float | None = Field(
        None, description="The largest peak resident set of one of those tasks, MB (2**20 B)"
    )
    task_usage: list[TaskUsageDocument | None] | None = Field(
        None, description="Per task rank, what it used (null: not known)"
    )
    attempts: int
    max_retries: int
    array_id: int | None
    array_index: int | None
    array_limit: int | None
    dependency: str | None
    argv: list[str] | None
    script: bool
    workdir: str | None
    nodelist: str
    events: list[Event] | None = None
    allocations: list[Allocation] | None = None
    stdout: str | None = None
    stderr: str | None = None


class JobList(BaseModel):
    jobs: list[JobDocument]
    next_offset: int | None = Field(description="Offset of the next page; null on the last.")


class OutputSlice(BaseModel):
    data: str = Field(description="The bytes read, decoded as UTF-8 (invalid bytes replaced).")
    offset: int = Field(description="Where to continue reading.")
    finished: bool
    state: str


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    store_fault: str | None
    engine_fault: str | None = Field(
        None, description="Why the backend's engine (Slurm, PJM, Ray) does not answer now"
    )
    pid: int
    cluster: str
    nodes: int
    uptime_s: float
    ticks: int
    store: str


class Layout(BaseModel):
    """Who holds each node, grouped as the topology suggests."""

    cluster: str
    kind: str
    size: int
    describe: str
    owners: list[int | None]
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Job id -> its name in orch queue (12, or 12_3 for element 3 of array 12)",
    )
    allocated: int
    groups: list[dict[str, Any]] | None = None
    dims: list[int] | None = None
    names: list[str] | None = None
    usage: list[dict[str, Any]] | None = Field(
        None,
        description="On a cluster that shares nodes, per node: state (IDLE, MIXED, ALLOCATED), "
        "cpus, gpus and mem_mb as [in use, in all], and the jobs on it",
    )
    aggregate: dict[str, Any] | None = Field(
        None,
        description="On a cluster of more than 4,096 nodes, the heat map the status page draws: "
        "occupancy per cell (a Tofu unit on a torus) and each job's cells and bounding box",
    )


class Status(BaseModel):
    """What the status page draws."""

    cluster: str
    time: float
    engine_fault: str | None = None
    counts: dict[str, int]
    queue: list[JobDocument]
    running: list[JobDocument]
    layout: Layout


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = Field(None, description="The field, parameter or header at fault.")
    example: str | None = Field(None, description="A valid value for that field.")


class ErrorBody(BaseModel):
    error: ErrorDetail
