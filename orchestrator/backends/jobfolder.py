"""What every backend of ours shares: a job's folder, the template ``start()``, the job's variables.

A backend builds on :class:`JobFolderBackend` and fills in its hooks, as submitit's executors
fill in ``_submit_command``:

``_launch(job)``
    Start the prepared attempt on the engine and return its handle (required).
``poll(handles)`` and ``signal(handle, signum)``
    From :class:`~orchestrator.backends.contract.BaseBackend` (required).
``_abort_launch(job_id, attempt, attempt_dir)``
    After a daemon crash during a start: stop what the engine may have started (the ``abort``
    marker that keeps the node-side supervisors from starting is already written).

``start()`` prepares the job's folder (:class:`JobPaths`, owner-only), writes a submitted
script, creates the two output files and calls ``_launch`` with a :class:`PreparedJob`; a
failure to prepare is a :class:`~orchestrator.exceptions.BackendError`, as the contract asks.
The per-task variables come from :func:`orchestrator.nodeside.rank_env.rank_environment`,
called where each task starts; :meth:`JobFolderBackend.job_environment` gives the job-wide ones.
"""

from __future__ import annotations

import os
import socket
import stat
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path

from orchestrator.backends.contract import (
    BaseBackend,
    Handle,
    LaunchSpec,
    Liveness,
    PollResult,
    usage_of,
)
from orchestrator.exceptions import BackendError
from orchestrator.nodeside import record
from orchestrator.nodeside.files import atomic_write
from orchestrator.nodeside.rank_env import binding_environment, task_binding
from orchestrator.resources.hostlist import compress_hostlist

__all__ = [
    "JobFolderBackend",
    "JobPaths",
    "PreparedJob",
    "free_port",
    "open_owner_only",
    "task_binding_environment",
]


class JobPaths:
    """The on-disk layout of one job: the only code that knows it (with
    :mod:`orchestrator.nodeside.record`, which names the files inside an attempt's folder).

    ``ROOT/jobs/<id>/`` holds ``stdout``, ``stderr`` (all tasks, all attempts, appended), the
    ``script`` if one was submitted, and per attempt ``attempt-<n>/`` with the task records
    (``task-<rank>.pid``, ``task-<rank>.rc``), the ``abort`` marker and the engine's own files.
    """

    def __init__(self, root: Path, job_id: int) -> None:
        self.folder = root / "jobs" / str(job_id)

    @property
    def stdout(self) -> Path:
        return self.folder / "stdout"

    @property
    def stderr(self) -> Path:
        return self.folder / "stderr"

    @property
    def script(self) -> Path:
        return self.folder / "script"

    def attempt(self, attempt: int) -> Path:
        return self.folder / f"attempt-{attempt}"

    def pid_file(self, attempt: int, rank: int) -> Path:
        return Path(record.pid_path(self.attempt(attempt), rank))

    def rc_file(self, attempt: int, rank: int) -> Path:
        return Path(record.rc_path(self.attempt(attempt), rank))

    def abort_file(self, attempt: int) -> Path:
        return Path(record.abort_path(self.attempt(attempt)))


@dataclass(frozen=True)
class PreparedJob:
    """One attempt of a job with its folder ready: what :meth:`JobFolderBackend._launch` gets.

    Attributes:
        spec: What to run, where.
        paths: The job's folder.
        attempt_dir: This attempt's folder (exists).
        argv: The command each task runs (a submitted script already written and named).
        cwd: The tasks' working directory (the job's ``workdir``, else its folder).
    """

    spec: LaunchSpec
    paths: JobPaths
    attempt_dir: Path
    argv: list[str]
    cwd: str

    @property
    def ntasks(self) -> int:
        return len(self.spec.nodes) * self.spec.tasks_per_node


def open_owner_only(path: str, flags: int) -> int:
    """An ``opener`` that creates the file readable and writable by its owner only, and never
    writes through a link a job put in its place."""
    return os.open(path, flags | os.O_NOFOLLOW, 0o600)


def task_binding_environment(spec: LaunchSpec, node_rank: int, local_rank: int) -> dict[str, str]:
    """The variables that bind one task to what our allocator gave it, for backends that bind
    tasks themselves (the local one): its GPUs (``CUDA_VISIBLE_DEVICES``, ``ORCH_GPUS``; none
    when the job asked for none on a cluster that has GPUs) and its cores (``ORCH_CPUS``,
    ``OMP_NUM_THREADS``). Empty when the allocator named neither (whole nodes, no GPUs)."""
    gpus: list[int] | None = None
    cpus: list[int] = []
    if spec.node_gpus:
        gpus = task_binding(spec.node_gpus[node_rank], local_rank, spec.gpus_per_task)
    if spec.node_cpus:
        cpus = task_binding(spec.node_cpus[node_rank], local_rank, spec.cpus_per_task)
    if gpus is None and not cpus:
        return {}
    return binding_environment(gpus, cpus, spec.cpus_per_task)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for ``MASTER_PORT``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class JobFolderBackend(BaseBackend):
    """A backend whose jobs live in job folders under :attr:`root` (see the module docstring)."""

    root: Path

    def paths(self, job_id: int) -> JobPaths:
        return JobPaths(self.root, job_id)

    def output_paths(self, job_id: int) -> tuple[str, str]:
        paths = self.paths(job_id)
        return str(paths.stdout), str(paths.stderr)

    # -- the template ---------------------------------------------------------------------------

    def start(self, spec: LaunchSpec) -> Handle:
        return self._launch(self.prepare(spec))

    def prepare(self, spec: LaunchSpec) -> PreparedJob:
        """Make the attempt's folder (the job's output may hold secrets: owner only), write a
        submitted script, and create the output files every task appends to.

        Raises:
            BackendError: the folder cannot be made or written.
        """
        paths = self.paths(spec.job_id)
        attempt_dir = paths.attempt(spec.attempt)
        try:
            for folder in (paths.folder.parent, paths.folder, attempt_dir):
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            argv = self._argv(spec, paths)
            for output in (paths.stdout, paths.stderr):
                with open(output, "ab", opener=open_owner_only):
                    pass
        except OSError as e:
            raise BackendError(f"job {spec.job_id}: cannot prepare {paths.folder}: {e}") from e
        cwd = spec.workdir or str(paths.folder)
        return PreparedJob(spec, paths, attempt_dir, argv, cwd)

    @abstractmethod
    def _launch(self, job: PreparedJob) -> Handle:
        """Start the prepared attempt's tasks on the engine; the handle that finds them again.

        Raises:
            BackendError: nothing of the attempt runs (clean up a half-started one first).
        """

    def abort_start(self, job_id: int, attempt: int) -> None:
        attempt_dir = self.paths(job_id).attempt(attempt)
        if not attempt_dir.is_dir():
            return  # start() made nothing: it started nothing either
        # The marker first: a supervisor that starts later refuses to run the command.
        record.write_abort(attempt_dir)
        self._abort_launch(job_id, attempt, attempt_dir)

    def _abort_launch(self, job_id: int, attempt: int, attempt_dir: Path) -> None:
        """Stop whatever of the attempt the engine may have started (optional hook)."""

    # -- what every backend reads ---------------------------------------------------------------

    @staticmethod
    def task_ends(attempt_dir: str | Path, ntasks: int) -> list[record.TaskEnd | None]:
        """Per rank, how the task ended (None: it has not, as far as its record says)."""
        return [record.read_task_end(attempt_dir, rank) for rank in range(ntasks)]

    def ended_attempt(self, job_id: int, attempt: int, ntasks: int) -> PollResult | None:
        """Read the attempt's task records: every node-side supervisor of ours writes one, once
        its task has ended."""
        ends = self.task_ends(self.paths(job_id).attempt(attempt), ntasks)
        if not ends or None in ends:
            return None
        return PollResult(
            Liveness.EXITED, tuple(e.code for e in ends if e is not None), 0, usage_of(ends)
        )

    # -- what every task sees -------------------------------------------------------------------

    def _argv(self, spec: LaunchSpec, paths: JobPaths) -> list[str]:
        if spec.script is not None:
            # The user submitted a script: it runs by its own #! line, or by /bin/sh.
            atomic_write(paths.script, spec.script, mode=stat.S_IRWXU)
            if spec.script.startswith("#!"):
                return [str(paths.script)]
            return ["/bin/sh", str(paths.script)]
        if not spec.argv:
            raise BackendError(f"job {spec.job_id}: neither a command nor a script to run")
        return list(spec.argv)

    @staticmethod
    def job_environment(spec: LaunchSpec) -> dict[str, str]:
        """The job's own ``env`` with the job-wide variables laid over it (no ``MASTER_*``: where
        rank 0 listens is each backend's business)."""
        env = dict(spec.env)
        n_nodes, tpn = len(spec.nodes), spec.tasks_per_node
        env.update(
            {
                "ORCH_JOB_ID": str(spec.job_id),
                "ORCH_JOB_NAME": spec.name,
                "ORCH_ATTEMPT": str(spec.attempt),
                "ORCH_NODELIST": compress_hostlist(spec.nodes),
                # In node-rank order, for wrappers that must derive ranks from it.
                "ORCH_NODES": ",".join(spec.nodes),
                "ORCH_NUM_NODES": str(n_nodes),
                "ORCH_TASKS_PER_NODE": str(tpn),
                "ORCH_CPUS_PER_TASK": str(spec.cpus_per_task),
                "WORLD_SIZE": str(n_nodes * tpn),
                "LOCAL_WORLD_SIZE": str(tpn),
                "OMP_NUM_THREADS": str(spec.cpus_per_task),
                # Job-wide, so that every rank decides alike whether to compute on GPUs.
                "ORCH_GPUS_PER_NODE": str(spec.gpus_on_each_node),
            }
        )
        return env
