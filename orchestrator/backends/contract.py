"""The backend contract: how the daemon starts, polls, signals and re-attaches allocated jobs.

A backend runs a job on the nodes the scheduler allocated. It knows the job model (what to run,
on which nodes, with how many tasks) but not the scheduler core.

Ownership: the daemon owns the job's state and its allocation; the backend owns the job's
processes and whatever on-disk or batch-system state it needs to find them again. Everything the
backend needs to find a running job after a daemon restart is in the :class:`Handle` it returns
from :meth:`BaseBackend.start`, which the daemon stores with the job. A handle is plain JSON.

Threading: the daemon calls a backend from one thread at a time (its tick loop, under its lock).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from orchestrator.nodeside.record import TaskEnd
    from orchestrator.resources.cluster import Cluster

__all__ = [
    "BaseBackend",
    "Handle",
    "LaunchSpec",
    "Liveness",
    "PollResult",
    "TaskUsage",
    "usage_of",
]

Handle = dict[str, Any]
"""JSON-serialisable data identifying a started job (pids and start times, a batch id, ...)."""


@dataclass(frozen=True)
class LaunchSpec:
    """What to run, where.

    Attributes:
        job_id: The daemon's job id.
        attempt: 1 for the first start, 2 for the first retry, ...
        argv: The command, run exactly as given (no shell), or None with ``script``.
        script: A script text the user submitted explicitly (run by its ``#!`` line, else
            ``/bin/sh``), or None with ``argv``.
        nodes: Names of the allocated nodes, in node-rank order.
        tasks_per_node: Processes per node.
        cpus_per_task: CPUs per task (exported for the job to size its thread pools).
        env: Extra environment variables of the job.
        workdir: The working directory (None: the job's own folder).
        name: The job's name.
        walltime_s: The job's time limit (None: none); batch backends size the engine's own
            limit from it (the daemon still enforces it).
        shape: The request's PJM-style shape as text (``2x3x2:torus``), None for a node count.
        gpus_per_task: GPUs each task asked for (0: none, or see ``gpus_per_node``).
        gpus_per_node: GPUs asked per node, not tied to tasks (Slurm's ``--gpus-per-node``);
            0 when the request gave them per task.
        mem_per_node_mb: Memory asked per node in MB (0: the engine's default).
        exclusive: Whole nodes (always on whole-node clusters; ``--exclusive`` on shared ones).
        partition: The node group (a Slurm partition) the job runs in; "" for the default.
        node_gpus: Per node, in node-rank order, the GPU indices our allocator gave the job
            (empty: none given, or an engine that chooses them itself, as Slurm does).
            :func:`orchestrator.nodeside.rank_env.task_binding` splits them among the tasks.
        node_cpus: Per node, the core indices given (empty: whole nodes, nothing to bind).
    """

    job_id: int
    attempt: int
    argv: Sequence[str] | None
    script: str | None
    nodes: Sequence[str]
    tasks_per_node: int = 1
    cpus_per_task: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    name: str = ""
    walltime_s: float | None = None
    shape: str | None = None
    gpus_per_task: int = 0
    gpus_per_node: int = 0
    mem_per_node_mb: int = 0
    exclusive: bool = True
    partition: str = ""
    node_gpus: tuple[tuple[int, ...], ...] = ()
    node_cpus: tuple[tuple[int, ...], ...] = ()

    @property
    def gpus_on_each_node(self) -> int:
        """GPUs the job uses on each of its nodes."""
        return max(self.gpus_per_node, self.gpus_per_task * self.tasks_per_node)


class Liveness(StrEnum):
    """What a poll found."""

    RUNNING = "running"
    EXITED = "exited"
    LOST = "lost"
    """Gone without an exit status (killed with the node, or never fully launched)."""
    REQUEUE = "requeue"
    """The engine ended this attempt through no fault of the job (preempted, its allocation
    ended, a node failed under it) and the job should run again: the daemon records it
    PREEMPTED and queues it at once, without spending a retry. A job that checkpointed on
    the signal resumes from its checkpoint."""


@dataclass(frozen=True)
class TaskUsage:
    """What one task used, as its node-side supervisor had it from the kernel (``wait4``).

    Attributes:
        cpu_s: User plus system CPU seconds (None: unknown).
        maxrss_kib: Peak resident set size in KiB (None: unknown).
    """

    cpu_s: float | None = None
    maxrss_kib: int | None = None


@dataclass(frozen=True)
class PollResult:
    """The state of one job's tasks.

    Attributes:
        liveness: ``RUNNING`` while any task runs and none failed; ``EXITED`` when every task
            has exited with a recorded status; ``LOST`` when a task vanished without one.
        exit_codes: Per task rank: the exit status (128 + signal for a signal), or None while
            running or when lost.
        alive: How many tasks still run.
        usage: Per task rank, what the task used once it has ended (None: running, or not
            known); empty when the backend knows nothing of it (:func:`usage_of`).
    """

    liveness: Liveness
    exit_codes: tuple[int | None, ...] = ()
    alive: int = 0
    usage: tuple[TaskUsage | None, ...] = ()

    @property
    def any_failed(self) -> bool:
        """A task exited non-zero."""
        return any(code not in (None, 0) for code in self.exit_codes)


def usage_of(ends: Sequence[TaskEnd | None]) -> tuple[TaskUsage | None, ...]:
    """:attr:`PollResult.usage` from the tasks' end records (``()`` when none says any)."""
    usage = tuple(
        None
        if end is None or (end.cpu_s is None and end.maxrss_kib is None)
        else TaskUsage(end.cpu_s, end.maxrss_kib)
        for end in ends
    )
    return usage if any(u is not None for u in usage) else ()


class BaseBackend(ABC):
    """Starts allocated jobs and keeps track of them.

    Subclasses name themselves in :attr:`name` (the daemon's ``--backend`` option).
    """

    name: ClassVar[str]
    shares_nodes: ClassVar[bool] = True
    """The engine can run several jobs on one node at once (False: whole nodes only, as PJM)."""

    @abstractmethod
    def start(self, spec: LaunchSpec) -> Handle:
        """Launch the job's tasks and return a handle once every task has been started.

        Raises:
            BackendError: nothing of the job runs (a half-started job is cleaned up first).
        """

    @abstractmethod
    def poll(self, handles: Mapping[int, Handle]) -> dict[int, PollResult]:
        """The state of many jobs in one call (``{job_id: handle}`` -> ``{job_id: result}``)."""

    @abstractmethod
    def signal(self, handle: Handle, signum: int) -> None:
        """Send ``signum`` to every live task of the job (ignore tasks already gone)."""

    @abstractmethod
    def abort_start(self, job_id: int, attempt: int) -> None:
        """After a daemon crash during :meth:`start`: stop whatever of that attempt runs and make
        sure nothing of it starts later."""

    def ended_attempt(self, job_id: int, attempt: int, ntasks: int) -> PollResult | None:
        """After :meth:`abort_start`: how the attempt ended when every one of its ``ntasks``
        tasks had already ended with a recorded status (a daemon killed after the launch but
        before recording it RUNNING), else None. The daemon then records that end instead of
        failing the attempt, so work that succeeded is not run again."""
        return None

    @classmethod
    def create(cls, root: Path, cluster: Cluster, options: Mapping[str, str]) -> BaseBackend:
        """Build the backend for a daemon whose state folder is ``root``.

        ``options`` are the daemon's ``--backend-opt KEY=VALUE`` pairs; a backend refuses the
        keys it does not know (:class:`~orchestrator.exceptions.InvalidRequestError` naming the
        key and the valid ones).
        """
        raise NotImplementedError(f"backend {cls.name!r} does not implement create()")

    def check(self) -> None:  # noqa: B027 - optional hook
        """At daemon start: make sure the engine answers (a daemon that starts anyway keeps
        every job PENDING with nothing said).

        Raises:
            BackendError: the engine cannot be reached; the message says what was tried.
        """

    @property
    def engine_fault(self) -> str | None:
        """Why the engine does not answer right now (its last query failed), None when it
        does. The daemon shows it in its status and in the reason of waiting jobs."""
        return None

    def unavailable_nodes(self) -> frozenset[str]:
        """Nodes of the pool that are not ours to give right now (down, drained, busy with
        other users' jobs). Called once per scheduling pass: one batched query at most."""
        return frozenset()

    def demand(self, nodes: int) -> None:  # noqa: B027 - optional hook
        """Called once per scheduling pass, before :meth:`unavailable_nodes`, with the nodes the
        jobs ready to start ask for in all (0: none wait). A pilot backend asks its engine for
        an allocation when jobs wait and it holds none."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """The daemon is stopping: release what the backend holds for itself (a pilot
        allocation with no job of ours left, a connection). Running jobs are not touched."""

    def forget(self, handle: Handle) -> None:  # noqa: B027 - optional hook
        """The daemon has recorded the job's end; release per-job backend resources."""

    def output_paths(self, job_id: int) -> tuple[str, str] | None:
        """Paths of the job's stdout and stderr when the backend keeps them on this machine."""
        return None
