"""Scheduling passes of the daemon: dependencies, limits, the core's decisions, job starts.

Functions of a :class:`~orchestrator.daemon.service.Daemon`, called by its tick under its lock.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.backends.contract import LaunchSpec
from orchestrator.daemon.table import LiveJob
from orchestrator.exceptions import BackendError, InvalidRequestError, JobNotFoundError
from orchestrator.resources.request import JobRequest
from orchestrator.resources.shares import FreeShares
from orchestrator.resources.topology import Block
from orchestrator.scheduling.job import JobState

if TYPE_CHECKING:
    from orchestrator.daemon.service import Daemon

__all__ = [
    "SIGNAL_ENV",
    "RunningJobView",
    "dependency_state",
    "parse_signal",
    "record_starts",
    "schedule",
    "settle_dependencies",
    "start_job",
]

log = logging.getLogger("orchestrator.daemon")

SIGNAL_ENV = "ORCH_SIGNAL"
"""A job's own signal before its walltime, in its ``env`` (as ``sbatch --signal`` or Slurm's
``SBATCH_SIGNAL``): ``SIG@SECONDS`` (``USR2@90``), overriding the daemon's."""


def parse_signal(text: str, field: str = SIGNAL_ENV) -> tuple[int, float]:
    """``SIG[@SECONDS]`` (Slurm's ``--signal``: a name with or without ``SIG``, or a number;
    60 seconds when not given) as (signal number, seconds before the walltime).

    >>> parse_signal("USR2@90") == (signal.SIGUSR2, 90.0)
    True
    >>> parse_signal("10") == (10, 60.0)
    True

    Raises:
        InvalidRequestError: anything else (names ``field``).
    """
    name, _, when = text.strip().partition("@")
    try:
        if name.isdigit():
            signum = int(signal.Signals(int(name)))
        else:
            upper = name.upper()
            signum = int(signal.Signals[upper if upper.startswith("SIG") else "SIG" + upper])
        seconds = float(when) if when else 60.0
        if not 0 <= seconds < 1e9:
            raise ValueError(seconds)
    except (KeyError, ValueError):
        raise InvalidRequestError(
            field, text, "expected SIG@SECONDS, a signal and seconds before the walltime", "USR2@90"
        ) from None
    return signum, seconds


class RunningJobView:
    """A job holding nodes (running or draining) as the scheduler core sees it: its id, request,
    block and start time (:class:`~orchestrator.scheduling.core.RunningLike`)."""

    __slots__ = ("block", "job_id", "request", "start_time")

    def __init__(self, job: LiveJob) -> None:
        assert job.block is not None
        self.job_id = job.job_id
        self.request = job.request
        self.block: Block = job.block
        self.start_time = job.start_time


def dependency_state(daemon: Daemon, job_id: int) -> JobState:
    """The state of a dependency (an unknown job counts as CANCELLED)."""
    live = daemon.waiting.get(job_id) or daemon.active.get(job_id)
    if live is not None:
        return live.state
    state = daemon.finished.get(job_id)
    if state is None:
        try:
            state = JobState(daemon.store.get_job(job_id)["state"])
        except JobNotFoundError:
            state = JobState.CANCELLED
        if state.is_finished:
            daemon.finished[job_id] = state
    return state


def settle_dependencies(daemon: Daemon, job: LiveJob, now: float) -> bool:
    """True when every dependency holds; cancels the job when one never can."""
    waiting = False
    for kind, dep in job.dependency:
        state = dependency_state(daemon, dep)
        if not state.is_finished:
            waiting = True
            continue
        ok = state is JobState.COMPLETED
        if (kind == "afterok" and not ok) or (kind == "afternotok" and ok):
            daemon.table.move(
                job,
                JobState.CANCELLED,
                f"dependency never satisfied: {kind}:{dep} ended {state}",
                now,
                end_time=now,
            )
            return False
    if waiting:
        return False
    job.dependency = ()
    daemon.table.dependent.discard(job.job_id)
    return True


@dataclass
class _Usage:
    """What each user and each job array holds now: the per-user and per-array limits read it
    while one scheduling pass hands out starts."""

    max_jobs_per_user: int | None
    max_nodes_per_user: int | None
    jobs: dict[str, int] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)
    arrays: dict[int, int] = field(default_factory=dict)

    def take(self, job: LiveJob, size: int) -> None:
        user = job.request.user
        self.jobs[user] = self.jobs.get(user, 0) + 1
        self.nodes[user] = self.nodes.get(user, 0) + size
        if job.array_id is not None:
            self.arrays[job.array_id] = self.arrays.get(job.array_id, 0) + 1

    def array_full(self, job: LiveJob) -> bool:
        return (
            job.array_limit is not None
            and job.array_id is not None
            and self.arrays.get(job.array_id, 0) >= job.array_limit
        )

    def user_full(self, job: LiveJob) -> bool:
        limit = self.max_jobs_per_user
        return limit is not None and self.jobs.get(job.request.user, 0) >= limit

    def may_start(self, job: LiveJob, size: int) -> bool:
        limit = self.max_nodes_per_user
        nodes_after = self.nodes.get(job.request.user, 0) + size
        over_nodes = limit is not None and nodes_after > limit
        return not (self.array_full(job) or self.user_full(job) or over_nodes)


def _settle_all_dependencies(daemon: Daemon, now: float) -> None:
    """Dependencies are settled even while the cluster is full, so a job whose dependency can
    never be satisfied is cancelled as soon as that is known."""
    table = daemon.table
    for job_id in list(table.dependent):
        job = table.waiting.get(job_id)
        if job is None or not job.dependency:
            table.dependent.discard(job_id)
        elif job.state is JobState.PENDING:
            settle_dependencies(daemon, job, now)


def schedule(daemon: Daemon, now: float) -> None:
    table = daemon.table
    running = list(table.holders())
    usage = _Usage(daemon.config.max_jobs_per_user, daemon.config.max_nodes_per_user)
    for job in table.active.values():
        usage.take(job, job.block.size if job.block else 0)
    _settle_all_dependencies(daemon, now)
    ready = [j for j in table.pending.values() if j.not_before <= now and not j.dependency]
    daemon.backend.demand(sum(j.request.node_count for j in ready))
    free = daemon.schedulable()
    if (free.free_count if isinstance(free, FreeShares) else int(free.any())) == 0:
        daemon.head = None
        return
    eligible = [j for j in ready if not usage.array_full(j) and not usage.user_full(j)]
    if not eligible:
        return
    decisions = daemon.core.schedule(
        now, eligible, [RunningJobView(j) for j in running if j.block is not None], free
    )
    daemon.head = int(decisions.head) if decisions.head is not None else None
    for start in decisions.starts:
        job = table.waiting[int(start.job_id)]
        if usage.may_start(job, start.block.size):
            usage.take(job, start.block.size)
            start_job(daemon, job, start.block, now)


def start_job(daemon: Daemon, job: LiveJob, block: Block, now: float) -> None:
    """Allocate ``block`` to ``job`` (STARTING, stored first), launch it, record it RUNNING.

    A launch the backend refuses ends the attempt FAILED (retried by policy). When the store
    refuses the RUNNING record (or the failure's), the outcome is kept on the job and
    :func:`record_starts` stores it at a later tick.
    """
    attempt = job.attempts + 1
    nodes = [int(n) for n in block.nodes]
    names = [daemon.cluster.topology.node_name(n) for n in nodes]
    # Read before the job moves: what it runs never changes once submitted.
    spec = _launch_spec(daemon, job, block, attempt, names)
    if not job.warn_known:
        text = spec.env.get(SIGNAL_ENV)
        with contextlib.suppress(InvalidRequestError):  # checked at submit
            job.warn = parse_signal(text) if text else None
        job.warn_known = True
    daemon.table.move(
        job,
        JobState.STARTING,
        f"attempt {attempt} on {len(nodes)} nodes",
        now,
        block=block,
        attempts=attempt,
        start_time=now,
        end_time=None,
        exit_code=None,
    )
    try:
        job.handle = daemon.backend.start(spec)
    except BackendError as e:
        job.launch_error = str(e)
    except Exception as e:
        # Not the backend's documented refusal: whatever of the attempt started must not run
        # on, and the job must not stay STARTING for ever.
        log.exception("job %d: starting attempt %d failed", job.job_id, attempt)
        with contextlib.suppress(Exception):
            daemon.backend.abort_start(job.job_id, attempt)
        job.launch_error = f"cannot start it: {type(e).__name__}: {e}"
    else:
        daemon.started_total += 1
    record_start(daemon, job, now)


def _launch_spec(
    daemon: Daemon, job: LiveJob, block: Block, attempt: int, names: list[str]
) -> LaunchSpec:
    row = daemon.store.get_job(job.job_id)
    env = dict(row["env"])
    if job.array_id is not None:
        env["ORCH_ARRAY_JOB_ID"] = str(job.array_id)
    return LaunchSpec(
        job_id=job.job_id,
        attempt=attempt,
        argv=row["argv"],
        script=row["script"],
        nodes=names,
        tasks_per_node=job.request.tasks_per_node,
        cpus_per_task=job.request.cpus_per_task,
        env=env,
        workdir=row["workdir"],
        name=row["name"],
        walltime_s=job.request.walltime_s,
        shape=str(job.request.shape) if job.request.shape is not None else None,
        **_resources(daemon, job.request, block),
    )


def _resources(daemon: Daemon, request: JobRequest, block: Block) -> dict[str, Any]:
    """The GPUs, memory and binding of a job's launch: on a cluster that shares nodes, the
    cores and GPUs the allocator gave it on each node; on a whole-node cluster, whole nodes
    (GPU indices all of each node's when the job asked for GPUs)."""
    fields: dict[str, Any] = {
        "gpus_per_task": request.gpus_per_task,
        "gpus_per_node": request.gpus_per_node,
        "mem_per_node_mb": request.mem_per_node_mb,
        "exclusive": request.exclusive or not daemon.cluster.shared,
        "partition": request.partition,
    }
    if block.shares is not None:
        fields["node_gpus"] = tuple(share.gpus for share in block.shares)
        if not request.exclusive:
            fields["node_cpus"] = tuple(share.cpus for share in block.shares)
    elif request.gpus_on_node:
        node = daemon.cluster.group(request.partition).node
        fields["node_gpus"] = tuple(tuple(range(node.gpus)) for _ in range(block.size))
    return fields


def record_start(daemon: Daemon, job: LiveJob, now: float) -> None:
    """Store how a launch went: RUNNING with its handle, or the failed attempt's end."""
    if job.launch_error is not None:
        with daemon.table.change() as change:
            daemon.end_attempt(change, job, JobState.FAILED, job.launch_error, None, now)
    elif job.handle is not None:
        nodes = job.block.nodes.tolist() if job.block is not None else []
        names = ",".join(daemon.cluster.topology.node_name(int(n)) for n in nodes)
        daemon.table.move(job, JobState.RUNNING, f"running on {names}", now, handle=job.handle)


def record_starts(daemon: Daemon, now: float) -> None:
    """Store the launches whose outcome the store refused at an earlier tick."""
    for job in list(daemon.table.active.values()):
        if job.state is JobState.STARTING and (
            job.handle is not None or job.launch_error is not None
        ):
            record_start(daemon, job, now)
