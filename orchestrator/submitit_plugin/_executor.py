"""The executor, its jobs and their watcher: submitit's plugin classes for this scheduler."""

from __future__ import annotations

import os
import shlex
import sys
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

from submitit.core import core, logger, utils
from submitit.core.core import R
from submitit.core.job_environment import JobEnvironment

from orchestrator.submitit_plugin._schedulers import (
    FINISHED,
    EmbeddedScheduler,
    RemoteScheduler,
    lookup,
    scheduler_for,
)

__all__ = ["OrchExecutor", "OrchInfoWatcher", "OrchJob"]

# submitit's parameter -> our submission field (shared ones; ``mem_gb``, ``timeout_min`` convert).
_FIELDS = {
    "nodes": "nodes",
    "tasks_per_node": "tasks_per_node",
    "cpus_per_task": "cpus_per_task",
    "gpus_per_node": "gpus_per_node",
    "name": "name",
    "shape": "shape",
    "priority": "priority",
    "partition": "partition",
    "account": "account",
    "retries": "retries",
}


class OrchInfoWatcher(core.InfoWatcher):
    """Asks one scheduler (``None``: knows nothing, every state ``UNKNOWN``) for the states of
    the jobs registered, all at once; an embedded scheduler at every call (it answers from
    memory), a daemon at most every 2 s and then every ``delay_s`` (submitit's rhythm)."""

    def __init__(
        self, scheduler: EmbeddedScheduler | RemoteScheduler | None, delay_s: int = 30
    ) -> None:
        super().__init__(delay_s)
        self.scheduler = scheduler

    def _make_command(self) -> list[str] | None:
        return None

    def update_if_long_enough(self, mode: str) -> None:
        if isinstance(self.scheduler, EmbeddedScheduler) and mode != "cache":
            self.update()
        else:
            super().update_if_long_enough(mode)

    def update(self) -> None:
        scheduler = self.scheduler
        wanted = sorted(self._registered - self._finished)
        if scheduler is None or not wanted:
            return
        self._num_calls += 1
        try:
            states = scheduler.states([int(j) for j in wanted])
        except Exception as e:
            # As submitit's own watchers: a failed status call is no job failure.
            logger.get_logger().warning(f"orch: status call failed ({e}), will retry")
        else:
            self._info_dict.update({str(k): v for k, v in states.items()})
        self._last_status_check = time.time()
        for job_id in wanted:
            if self.is_done(job_id, mode="cache"):
                self._finished.add(job_id)

    def get_state(self, job_id: str, mode: str = "standard") -> str:
        state = self.get_info(job_id, mode=mode).get("State")
        return str(state) if state else "UNKNOWN"

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        return self.get_state(job_id, mode=mode) in FINISHED


class OrchJob(core.Job[R]):
    """A job of our scheduler: ``job_id`` is its id there (``orch show ID``)."""

    watcher = OrchInfoWatcher(None)

    _scheduler_key: str = ""

    def _bind(
        self, scheduler: EmbeddedScheduler | RemoteScheduler, watcher: OrchInfoWatcher
    ) -> None:
        for job in (self, *self._sub_jobs):
            if isinstance(job, OrchJob):
                job.watcher = watcher
                job._scheduler_key = scheduler.key
                # Same machine, same file system: a result is there when the job has ended.
                job._results_timeout_s = 2 if isinstance(scheduler, EmbeddedScheduler) else 15
        watcher.register_job(self.job_id)

    @property
    def _scheduler(self) -> EmbeddedScheduler | RemoteScheduler | None:
        scheduler = self.watcher.scheduler
        return scheduler if isinstance(self.watcher, OrchInfoWatcher) else None

    def cancel(self, check: bool = True) -> None:
        """Cancel the job (a running one: SIGTERM, SIGKILL after the grace period)."""
        scheduler = self._scheduler
        if scheduler is None:
            if check:
                raise RuntimeError(f"job {self.job_id}: its scheduler is not reachable from here")
            return
        scheduler.cancel(int(self.job_id))

    def wait(self) -> None:
        scheduler = self._scheduler
        pause = scheduler.poll_s if scheduler is not None else 1.0
        while not self.done():
            time.sleep(pause)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("watcher", None)  # a scheduler does not travel; its key does
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        scheduler = lookup(state.get("_scheduler_key", ""))
        if scheduler is not None:
            self.watcher = _watcher_of(scheduler)
        self._register_in_watcher()


_WATCHERS: dict[str, OrchInfoWatcher] = {}


def _watcher_of(scheduler: EmbeddedScheduler | RemoteScheduler) -> OrchInfoWatcher:
    watcher = _WATCHERS.get(scheduler.key)
    if watcher is None or watcher.scheduler is not scheduler:
        watcher = _WATCHERS[scheduler.key] = OrchInfoWatcher(scheduler)
    return watcher


class OrchExecutor(core.Executor):
    """submitit's executor for this scheduler (``submitit.AutoExecutor(folder, cluster="orch")``
    or ``orchestrator.Executor(folder)``).

    Args:
        folder: submitit's folder for pickles, results and logs (``%j``: the job id).
        state_dir: The state folder of a running ``orch daemon`` (default: ``$ORCH_STATE_DIR``,
            else ``~/.orch``); for an embedded scheduler, where it keeps its state (default:
            ``FOLDER/.orch``).
        mode: ``auto`` (that daemon when one answers, else an embedded scheduler), ``daemon``
            or ``embedded``.
        cluster: An embedded scheduler's cluster preset (``local``: 4 nodes of this machine).
        on_exit: An embedded scheduler's jobs when the script ends: ``wait`` for them or
            ``cancel`` them (with a warning).
        max_num_timeout: Requeues on the signal before the walltime a checkpointable job may
            use (submitit's meaning).
        max_pickle_size_gb: As submitit's.
        python: The interpreter of the jobs (default: this one).

    Parameters (``update_parameters``, or ``orch_``-prefixed through ``AutoExecutor``):
    submitit's ``timeout_min`` (default 5, as on Slurm), ``nodes``, ``tasks_per_node``,
    ``cpus_per_task``, ``gpus_per_node``, ``mem_gb``, ``name``, ``stderr_to_stdout``, and ours:
    ``signal_delay_s`` (seconds before the walltime the job is sent submitit's signal,
    ``SIGUSR2``; default 90, at most a quarter of the walltime), ``shape``, ``priority``,
    ``partition``, ``account``, ``retries``, ``cluster``, ``env`` (extra variables).
    """

    job_class = OrchJob

    def __init__(
        self,
        folder: str | os.PathLike[str],
        state_dir: str | os.PathLike[str] | None = None,
        mode: str = "auto",
        cluster: str = "local",
        on_exit: str = "wait",
        max_num_timeout: int = 3,
        max_pickle_size_gb: float = 1.0,
        python: str | None = None,
    ) -> None:
        super().__init__(Path(folder))
        self.state_dir = state_dir
        self.mode = mode
        self.parameters["cluster"] = cluster
        self.on_exit = on_exit
        self.max_num_timeout = max_num_timeout
        self.max_pickle_size_gb = max_pickle_size_gb
        self.python = python or sys.executable
        self._scheduler: EmbeddedScheduler | RemoteScheduler | None = None
        utils.JobPaths.get_first_id_independent_folder(self.folder).mkdir(
            parents=True, exist_ok=True
        )

    @classmethod
    def affinity(cls) -> int:
        # Available, never chosen by AutoExecutor unless named (cluster="orch"): a machine
        # with a daemon may still be one where the user means Slurm.
        return 0

    @classmethod
    def _valid_parameters(cls) -> set[str]:
        return {
            "timeout_min",
            "mem_gb",
            "stderr_to_stdout",
            "signal_delay_s",
            "cluster",
            "env",
            *_FIELDS,
        }

    _PREFIX: ClassVar[str] = "orch_"

    def _internal_update_parameters(self, **kwargs: Any) -> None:
        given = {k.removeprefix(self._PREFIX): v for k, v in kwargs.items() if v is not None}
        unknown = sorted(set(given) - self._valid_parameters())
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {unknown} of the orch executor; valid: "
                + ", ".join(sorted(self._valid_parameters()))
            )
        if "nodes" in given and "shape" in given:
            raise ValueError("give nodes or shape, not both")
        super()._internal_update_parameters(**given)

    @property
    def scheduler(self) -> EmbeddedScheduler | RemoteScheduler:
        """The scheduler this executor submits to (started or found at first use)."""
        if self._scheduler is None or getattr(self._scheduler, "closed", False):
            folder = utils.JobPaths.get_first_id_independent_folder(self.folder)
            self._scheduler = scheduler_for(
                self.mode, self.state_dir, folder, str(self.parameters["cluster"]), self.on_exit
            )
        return self._scheduler

    def job_mapping(self) -> dict[str, Any]:
        """The submission (the daemon's JSON fields) of a job run with these parameters."""
        p = self.parameters
        job: dict[str, Any] = {f: p[k] for k, f in _FIELDS.items() if k in p}
        job.setdefault("name", "submitit")
        if "shape" not in job:
            job.setdefault("nodes", 1)
        if "mem_gb" in p:
            job["mem"] = f"{round(float(p['mem_gb']) * 1024)}M"
        timeout_s = float(p.get("timeout_min", 5)) * 60
        job["time"] = timeout_s
        # Given: as given (Slurm's --signal=USR2@N); not given: 90 s, at most a quarter of the
        # walltime (a 1-minute job is warned 15 s before, not at its start).
        delay = min(float(p.get("signal_delay_s", min(90.0, timeout_s / 4))), timeout_s)
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        env = {
            **{str(k): str(v) for k, v in p.get("env", {}).items()},
            "SUBMITIT_EXECUTOR": OrchExecutor.name(),
            "ORCH_SIGNAL": f"{JobEnvironment.USR_SIG}@{delay:g}",
            "SUBMITIT_PREEMPT_SIGNAL": JobEnvironment.USR_SIG,
            "ORCH_SUBMITIT_SYS_PATH": os.pathsep.join(paths),
        }
        if p.get("stderr_to_stdout"):
            env["SUBMITIT_STDERR_TO_STDOUT"] = "1"
        job["env"] = env
        job["argv"] = [
            *shlex.split(self.python),
            "-u",
            "-m",
            "orchestrator.submitit_plugin._job",
            str(self.folder),
        ]
        # Where submitit's jobs run on Slurm and locally: the submitter's folder.
        job["workdir"] = os.getcwd()
        return job

    def _internal_process_submissions(
        self, delayed_submissions: list[utils.DelayedSubmission]
    ) -> list[core.Job[Any]]:
        """Pickle each call, submit them all in one request (atomically), then put each pickle
        where its job reads it (a job that starts first waits for it, as submitit's do)."""
        timeout_min = float(self.parameters.get("timeout_min", 5))
        pickle_dir = utils.JobPaths.get_first_id_independent_folder(self.folder)
        pickles: list[Path] = []
        try:
            for delayed in delayed_submissions:
                path = pickle_dir / f"{uuid.uuid4().hex}.pkl"
                # submitit types it int; a fraction of a minute works the same.
                delayed.set_timeout(timeout_min, self.max_num_timeout)  # type: ignore[arg-type]
                delayed.dump(path)
                pickles.append(path)
            size = sum(p.stat().st_size for p in pickles) / 1024**3
            if size > self.max_pickle_size_gb:
                raise RuntimeError(
                    f"submitting {size:.2f} GB > {self.max_pickle_size_gb} GB of pickled "
                    "functions and arguments; raise executor.max_pickle_size_gb if meant"
                )
            scheduler = self.scheduler
            mapping = self.job_mapping()
            ids = scheduler.submit([mapping] * len(pickles))
        except BaseException:
            for path in pickles:
                path.unlink(missing_ok=True)
            raise
        watcher = _watcher_of(scheduler)
        ntasks = self._num_tasks()
        jobs: list[core.Job[Any]] = []
        for job_id, path in zip(ids, pickles, strict=True):
            job: OrchJob[Any] = OrchJob(self.folder, str(job_id), tasks=list(range(ntasks)))
            job._bind(scheduler, watcher)
            job.paths.move_temporary_file(path, "submitted_pickle")
            jobs.append(job)
        return jobs

    def _num_tasks(self) -> int:
        p = self.parameters
        if "shape" in p:
            # A torus shape AxBxC[:...] holds A*B*C nodes.
            nodes = 1
            for part in str(p["shape"]).split(":")[0].split("x"):
                nodes *= int(part)
        else:
            nodes = int(p.get("nodes", 1))
        return nodes * int(p.get("tasks_per_node", 1))

    def close(self) -> None:
        """End this executor's embedded scheduler as the script's end would (see ``on_exit``)."""
        if isinstance(self._scheduler, EmbeddedScheduler):
            self._scheduler.finish()
