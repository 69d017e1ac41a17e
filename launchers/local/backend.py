"""The local backend: runs an allocated job on this machine as if each node were a host.

Every task is one process group, led by a small supervisor (:mod:`.supervisor`) that records its
pid, start time and exit status in the job's folder, so a restarted daemon re-attaches to a job by
pid plus start time and learns how it ended even if it ended while the daemon was down.

Each task sees the node list and its rank the way a batch system's task would (``ORCH_*``) and
the variables ``torch.distributed``'s ``env://`` initialisation reads (``MASTER_ADDR``,
``MASTER_PORT``, ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``), so a multi-node program runs unchanged.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from launchers.local.spawning import Spawner, SpawnUncertainError
from orchestrator.backends.contract import Handle, Liveness, PollResult, usage_of
from orchestrator.backends.jobfolder import (
    JobFolderBackend,
    PreparedJob,
    free_port,
    open_owner_only,
    task_binding_environment,
)
from orchestrator.backends.options import option, parse_options
from orchestrator.exceptions import BackendError
from orchestrator.nodeside import record
from orchestrator.nodeside.files import process_start_ticks
from orchestrator.nodeside.rank_env import rank_environment

if TYPE_CHECKING:
    from orchestrator.resources.cluster import Cluster

__all__ = ["LocalBackend", "LocalOptions"]

SUPERVISOR_SCRIPT = Path(__file__).resolve().parent / "supervisor.py"


@dataclass(frozen=True)
class LocalOptions:
    """``--backend local`` options (``--backend-opt KEY=VALUE``)."""

    inherit_env: bool = option(
        True, "tasks start from the daemon's environment (0: from PATH only)", "0"
    )
    spawner: bool = option(
        True, "fork task supervisors from one helper (0: a new interpreter each)", "0"
    )


class LocalBackend(JobFolderBackend):
    """Runs jobs as local process groups.

    Args:
        root: The folder under which each job's :class:`~orchestrator.backends.JobPaths` lives.
        inherit_env: Start each task from the daemon's environment (as Slurm's default
            ``--export=ALL``); the job's own ``env`` and the rank variables are laid over it.
        spawner: Fork the task supervisors from one helper process (:mod:`.spawner`).
    """

    name = "local"

    def __init__(self, root: Path, *, inherit_env: bool = True, spawner: bool = True) -> None:
        self.root = Path(root)
        self.inherit_env = inherit_env
        # Children started by this daemon process, reaped on poll so none stays a zombie.
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._spawner = Spawner() if spawner else None

    @classmethod
    def create(cls, root: Path, cluster: Cluster, options: Mapping[str, str]) -> LocalBackend:
        """``--backend local`` with the options of :class:`LocalOptions`."""
        opts = parse_options(LocalOptions, options, cls.name)
        return cls(root, inherit_env=opts.inherit_env, spawner=opts.spawner)

    def close(self) -> None:
        if self._spawner is not None:
            self._spawner.close()

    def _launch(self, job: PreparedJob) -> Handle:
        spec = job.spec
        base = dict(os.environ) if self.inherit_env else {"PATH": os.defpath}
        base.update(self.job_environment(spec))
        base.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())})
        tpn = spec.tasks_per_node
        tasks: list[list[int]] = []
        # A missing folder is refused here (BackendError), not in a forked supervisor.
        spawner = self._spawner if os.path.isdir(job.cwd) else None
        try:
            with (
                open(job.paths.stdout, "ab", opener=open_owner_only) as out,
                open(job.paths.stderr, "ab", opener=open_owner_only) as err,
            ):
                for rank in range(job.ntasks):
                    env = dict(base)
                    env.update(rank_environment(spec.nodes, tpn, *divmod(rank, tpn)))
                    env.update(task_binding_environment(spec, *divmod(rank, tpn)))
                    args = [str(job.attempt_dir), str(rank), "--", *job.argv]
                    if spawner is not None:
                        try:
                            pid_ticks = spawner.spawn(
                                args, env, job.cwd, out.fileno(), err.fileno()
                            )
                            tasks.append(list(pid_ticks))
                            continue
                        except SpawnUncertainError as e:
                            # Whatever of this attempt started must not run on.
                            self.abort_start(spec.job_id, spec.attempt)
                            raise BackendError(f"job {spec.job_id}: {e}") from e
                        except OSError:
                            spawner = None  # this job's other tasks: started by us
                    tasks.append(self._start_supervisor(args, env, job.cwd, out, err))
        except OSError as e:
            for pid, _ in tasks:
                _killpg(pid, signal.SIGKILL)
            raise BackendError(
                f"job {spec.job_id}: cannot start its tasks in {job.cwd}: {e}"
            ) from e
        return {"attempt": spec.attempt, "dir": str(job.attempt_dir), "tasks": tasks}

    def _start_supervisor(
        self, args: list[str], env: Mapping[str, str], cwd: str, out: IO[bytes], err: IO[bytes]
    ) -> list[int]:
        """Start a task's supervisor as a new interpreter; its pid and start ticks."""
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(SUPERVISOR_SCRIPT), *args],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        self._children[proc.pid] = proc
        # Our unreaped child: its /proc entry cannot vanish or be reused yet.
        return [proc.pid, process_start_ticks(proc.pid) or 0]

    def _reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]

    def poll(self, handles: Mapping[int, Handle]) -> dict[int, PollResult]:
        self._reap()
        return {job_id: self._poll_one(handle) for job_id, handle in handles.items()}

    @staticmethod
    def _poll_one(handle: Handle) -> PollResult:
        attempt_dir = handle["dir"]
        ends: list[record.TaskEnd | None] = []
        alive = lost = 0
        for rank, (pid, ticks) in enumerate(handle["tasks"]):
            end = record.read_task_end(attempt_dir, rank)
            if end is None and process_start_ticks(pid) == ticks:
                alive += 1
            elif end is None:
                # It may have written its record just before exiting: look again.
                end = record.read_task_end(attempt_dir, rank)
                lost += end is None
            ends.append(end)
        codes = tuple(end.code if end is not None else None for end in ends)
        if alive:
            return PollResult(Liveness.RUNNING, codes, alive, usage_of(ends))
        return PollResult(Liveness.LOST if lost else Liveness.EXITED, codes, 0, usage_of(ends))

    def signal(self, handle: Handle, signum: int) -> None:
        for pid, ticks in handle["tasks"]:
            if process_start_ticks(pid) == ticks:
                _killpg(pid, signum)

    def _abort_launch(self, job_id: int, attempt: int, attempt_dir: Path) -> None:
        for pid_file in attempt_dir.glob("task-*.pid"):
            task = record.read_pid(pid_file)
            if task is not None and process_start_ticks(task[0]) == task[1]:
                _killpg(task[0], signal.SIGKILL)


def _killpg(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
