"""The launcher's work: jobs in, :class:`JobReturn` records out.

Per sweep (one :class:`OrchSweep` per launcher object): a scheduler session (in-process or a
daemon), a folder ``<sweep dir>/.orch_launcher/`` with what the job processes need (Hydra's
context, the task function and singletons pickled once, each job's composed config), a manifest
``<state dir>/sweeps/<sweep id>.json`` with its job lines ``<sweep id>.jobs.jsonl`` that
``orch sweep status / wait`` read, and the sweep's MLflow parent run when the app tracks to
MLflow.

Each job runs ``python -m hydra_plugins.orch_launcher._worker FOLDER`` on its allocated nodes,
or, with the sweep's fork server (``fork_server``, the default), the thin client
``_fsclient.py FOLDER``, which has the trial forked from a server that imported Hydra and the
app once (see ``_forkserver``); rank 0 writes the job's :class:`JobReturn` (pickled) into
FOLDER. A job that ends without one (killed, timed out, crashed interpreter) becomes a FAILED
record that says how it ended and quotes the end of its stderr: a failure is a record, never a
crash of the sweep.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.orch_launcher._clients import (
    EmbeddedScheduler,
    Ended,
    RemoteScheduler,
    make_scheduler,
)
from hydra_plugins.orch_launcher._compose_once import ComposedOnce
from hydra_plugins.orch_launcher._tracking import ParentRun
from orchestrator.exceptions import InvalidRequestError, OrchestratorError

__all__ = ["Detached", "JobFailedError", "OrchSweep", "PendingJob", "finished_line"]

log = logging.getLogger("hydra_plugins.orch_launcher")

# The folder above ``hydra_plugins``: put on the job's PYTHONPATH so ``-m`` finds the worker.
_PLUGIN_ROOT = Path(__file__).resolve().parents[2]
RESULT = "result.pkl"
CONFIG = "config.pkl"
SHARED = "shared.pkl"
SYS_PATH = "sys_path.json"
FSCLIENT = Path(__file__).resolve().parent / "_fsclient.py"
FORKSERVER_START_S = 60.0


class JobFailedError(OrchestratorError):
    """A job ended without returning: how it ended, and the end of its stderr."""


@dataclass(frozen=True)
class Detached:
    """The return value of a job of a detached sweep: where to follow it."""

    sweep_id: str
    job_id: int

    def __str__(self) -> str:
        return f"job {self.job_id} submitted (follow: orch sweep wait {self.sweep_id})"


@dataclass
class PendingJob:
    """A submitted job the sweep waits for."""

    job_id: int
    idx: int
    overrides: list[str]
    folder: Path
    submitted: float
    env: dict[str, str] = field(default_factory=dict)


class OrchSweep:
    """One multirun's scheduler session (see the module docstring)."""

    def __init__(
        self,
        params: Mapping[str, Any],
        config: DictConfig,
        hydra_context: HydraContext,
        task_function: TaskFunction,
    ) -> None:
        self.params = dict(params)
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.sweep_id = uuid.uuid4().hex[:8]
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self.folder = self.sweep_dir / ".orch_launcher"
        self.cwd = str(OmegaConf.select(config, "hydra.runtime.cwd") or os.getcwd())
        self.scheduler: EmbeddedScheduler | RemoteScheduler | None = None
        self.parent: ParentRun | None = None
        self.study = ""
        self.storage: str | None = None
        """The Optuna storage of the study a sweeper drives (``orch sweep status`` reads it)."""
        # The launcher's setup installed it before the sweeper's first batch check; this finds it.
        self.composer = ComposedOnce.install(hydra_context.config_loader)
        self.created = time.time()
        self._header_written: dict[str, Any] | None = None
        self.counts = {"n_trials": 0, "n_complete": 0, "n_failed": 0}
        self._shared_written = False
        self._forkserver: subprocess.Popen[bytes] | None = None
        self._forkserver_dir: Path | None = None
        self._forkserver_ready = False

    # -- setup ----------------------------------------------------------------------------------

    def _session(self) -> EmbeddedScheduler | RemoteScheduler:
        if self.scheduler is None:
            self.scheduler = make_scheduler(
                self.params.get("scheduler") or {}, self.params.get("cluster"), self.folder / "orch"
            )
            atexit.register(self.close)
            log.info(
                "orch sweep %s: scheduler %s, sweep dir %s",
                self.sweep_id,
                self.scheduler.url,
                self.sweep_dir,
            )
        return self.scheduler

    def open_parent_run(self, study: str = "", run_id: str | None = None) -> ParentRun | None:
        """The sweep's MLflow parent run (made once; None when the app does not track).

        Args:
            study: The Optuna study the sweep drives (tag ``orch.study``).
            run_id: Reopen this parent run (a resumed study keeps its parent).
        """
        if self.parent is None:
            self.study = study
            self.parent = ParentRun.open(self.config, self.sweep_id, study, self.cwd, run_id)
        return self.parent

    def _write_shared(self) -> None:
        if self._shared_written:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        # The job unpickles the task function by reference when its module is importable:
        # give it the same import path as this process.
        (self.folder / SYS_PATH).write_text(json.dumps([p for p in sys.path if p]))
        shared = {
            "hydra_context": self.hydra_context,
            "task_function": self.task_function,
            "singletons": Singleton.get_state(),
        }
        _atomic_pickle(self.folder / SHARED, shared)
        self._shared_written = True
        if self.params.get("fork_server", True) and not self.params.get("detach"):
            self._start_forkserver()

    def _start_forkserver(self) -> None:
        # A private folder (mkdtemp: 0700) under the system's temp dir: a Unix socket path must
        # be short (108 bytes), and only we may reach it (the server checks the peer's uid too).
        self._forkserver_dir = Path(tempfile.mkdtemp(prefix="orch-fs-"))
        env = {**os.environ, "PYTHONPATH": _pythonpath()}
        with open(self.folder / "forkserver.log", "ab") as log_file:
            self._forkserver = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hydra_plugins.orch_launcher._forkserver",
                    str(self._forkserver_dir / "sock"),
                    str(self.folder),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env=env,
                cwd=self.cwd,
            )

    def _forkserver_socket(self) -> str | None:
        """The server's socket once it listens (waited for at the first job); None without one.

        A server that fails to start costs speed, not trials: jobs run in fresh interpreters.
        """
        if self._forkserver is None or self._forkserver_dir is None:
            return None
        ready = self._forkserver_dir / "sock.ready"
        deadline = time.monotonic() + FORKSERVER_START_S
        while not self._forkserver_ready:
            if ready.exists():
                self._forkserver_ready = True
            elif self._forkserver.poll() is not None or time.monotonic() > deadline:
                log.warning(
                    "orch sweep %s: the fork server did not start (see %s); every trial starts "
                    "a fresh interpreter",
                    self.sweep_id,
                    self.folder / "forkserver.log",
                )
                self._stop_forkserver()
                return None
            else:
                time.sleep(0.01)
        return str(self._forkserver_dir / "sock")

    def _stop_forkserver(self) -> None:
        """Stop taking trials; running ones finish (the server exits after them)."""
        server, self._forkserver = self._forkserver, None
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.warning("the fork server still serves running trials; it ends after them")
        if self._forkserver_dir is not None and (server is None or server.poll() is not None):
            shutil.rmtree(self._forkserver_dir, ignore_errors=True)

    # -- submission -----------------------------------------------------------------------------

    def _job_request(
        self, sweep_config: DictConfig, folder: Path, env: Mapping[str, str]
    ) -> dict[str, Any]:
        lc = sweep_config.hydra.launcher
        if "ORCH_FORKSERVER" in env:
            argv = [sys.executable, "-I", "-S", str(FSCLIENT), str(folder)]
        else:
            argv = [sys.executable, "-m", "hydra_plugins.orch_launcher._worker", str(folder)]
        request: dict[str, Any] = {
            "argv": argv,
            "name": str(lc.name)[:256],
            "tasks_per_node": int(lc.tasks_per_node),
            "cpus_per_task": int(lc.cpus_per_task),
            "gpus_per_task": int(lc.gpus_per_task),
            "priority": int(lc.priority),
            "retries": int(lc.retries),
            "workdir": self.cwd,
            "env": dict(env),
        }
        if lc.shape is not None:
            request["shape"] = str(lc.shape)
        else:
            request["nodes"] = int(lc.nodes) if lc.nodes is not None else 1
        if lc.time is not None:
            request["time"] = lc.time
        if lc.gpus_per_node:
            request["gpus_per_node"] = int(lc.gpus_per_node)
        if lc.mem is not None:
            request["mem"] = lc.mem if isinstance(lc.mem, int) else str(lc.mem)
        if lc.partition is not None:
            request["partition"] = str(lc.partition)
        if lc.exclusive:
            request["exclusive"] = True
        return request

    def submit(self, items: Sequence[tuple[list[str], int, dict[str, str]]]) -> list[PendingJob]:
        """Submit jobs ``(overrides, job index, extra environment)`` in one batch.

        Raises:
            InvalidRequestError: a resource field the scheduler refuses, named as
                ``hydra.launcher.<field>``.
        """
        return self.submit_prepared(self.prepare(items))

    def prepare(
        self, items: Sequence[tuple[list[str], int, dict[str, str]]]
    ) -> list[tuple[PendingJob, dict[str, Any]]]:
        """Compose and write what jobs need, without submitting them (a sweeper prepares the
        next trial while the running ones run, and submits it the moment a slot frees)."""
        self._session()
        self._write_shared()
        parent = self.open_parent_run(self.study)
        prepared: list[tuple[PendingJob, dict[str, Any]]] = []
        for overrides, idx, extra in items:
            sweep_config = self.composer.take(self.config, list(overrides))
            folder = self.folder / f"job-{idx}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / RESULT).unlink(missing_ok=True)  # a rerun must not read an old result
            _atomic_pickle(folder / CONFIG, {"config": sweep_config, "idx": idx})
            env = {str(k): str(v) for k, v in (self.params.get("env") or {}).items()}
            env["PYTHONPATH"] = _pythonpath()
            env.update({"ORCH_SWEEP_ID": self.sweep_id, "ORCH_TRIAL": str(idx)})
            if parent is not None:
                env["ORCH_PARENT_RUN_ID"] = parent.run_id
                # Where the parent logs, so that the trials log there too whatever the
                # daemon's own environment says (credentials stay in ~/.mlflow/credentials:
                # the daemon records a job's environment).
                env.setdefault("MLFLOW_TRACKING_URI", parent.uri)
                env.setdefault("MLFLOW_EXPERIMENT_NAME", parent.experiment)
            socket_path = self._forkserver_socket()
            if socket_path is not None:
                env["ORCH_FORKSERVER"] = socket_path
            env.update(extra)
            job = PendingJob(-1, idx, list(overrides), folder, time.time(), env)
            prepared.append((job, self._job_request(sweep_config, folder, env)))
        return prepared

    def submit_prepared(
        self, prepared: Sequence[tuple[PendingJob, dict[str, Any]]]
    ) -> list[PendingJob]:
        """Submit prepared jobs in one batch (see :meth:`submit`)."""
        scheduler = self._session()
        pending = [job for job, _ in prepared]
        requests = [request for _, request in prepared]
        for job in pending:
            job.submitted = time.time()
            log.info("\t#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))
        try:
            ids = scheduler.submit(requests)
        except InvalidRequestError as e:
            name = e.field.rsplit(".", 1)[-1]
            raise InvalidRequestError(
                f"hydra.launcher.{name}", e.value, e.reason, f"hydra.launcher.{name}={e.example}"
            ) from e
        entries = []
        for job, job_id in zip(pending, ids, strict=True):
            job.job_id = job_id
            entries.append(
                {
                    "job_id": job_id,
                    "idx": job.idx,
                    "overrides": job.overrides,
                    "folder": str(job.folder),
                }
            )
        self.counts["n_trials"] += len(pending)
        self._write_manifest(entries)
        return pending

    def _write_manifest(self, entries: Sequence[Mapping[str, Any]]) -> None:
        """Record submitted jobs: the sweep's header ``<id>.json`` (rewritten only when it
        changes) and one line per job appended to ``<id>.jobs.jsonl``, so a sweep of n jobs
        writes O(n), not the whole list at every submission (10,000 jobs: 23 min of JSON)."""
        scheduler = self._session()
        folder = scheduler.root / "sweeps"
        header = {
            "sweep_id": self.sweep_id,
            "mode": scheduler.mode,
            "url": scheduler.url,
            "state_dir": str(scheduler.root),
            "sweep_dir": str(self.sweep_dir),
            "created": self.created,
            "parent_run_id": self.parent.run_id if self.parent else None,
            "tracking_uri": self.parent.uri if self.parent else None,
            "study": self.study,
            "storage": self.storage,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "ended": None,
            "jobs_file": f"{self.sweep_id}.jobs.jsonl",
        }
        if header != self._header_written:
            self._write_header(folder, header)
        # One write per batch of whole lines: a crash leaves at most a torn last line, which
        # the reader skips.
        lines = "".join(json.dumps(entry) + "\n" for entry in entries)
        with open(folder / str(header["jobs_file"]), "a") as f:
            f.write(lines)

    def _write_header(self, folder: Path, header: dict[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{self.sweep_id}.json.tmp"
        tmp.write_text(json.dumps(header, indent=1))
        tmp.replace(folder / f"{self.sweep_id}.json")
        self._header_written = header

    def _mark_ended(self, scheduler: EmbeddedScheduler | RemoteScheduler) -> None:
        """Say in the header that this process submits no more jobs (``orch sweep status
        --watch`` stops once that is so and every job has ended)."""
        if self._header_written is None:
            return
        header = {**self._header_written, "ended": time.time()}
        try:
            self._write_header(scheduler.root / "sweeps", header)
        except OSError as e:  # a manifest left "running": --watch then checks the pid
            log.warning("orch sweep %s: cannot mark the manifest ended: %s", self.sweep_id, e)

    # -- waiting --------------------------------------------------------------------------------

    def wait_any(
        self, pending: Sequence[PendingJob], timeout_s: float | None = None
    ) -> list[tuple[PendingJob, JobReturn]]:
        """Block until one of ``pending`` ends (or ``timeout_s``); the ended ones' records."""
        scheduler = self._session()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        poll_s = float(self.params.get("poll_s", 0.05))
        by_id = {p.job_id: p for p in pending}
        while by_id:
            ended = scheduler.ended(list(by_id))
            if ended:
                out = [(by_id[i], self._collect(by_id[i], e)) for i, e in ended.items()]
                for (job, ret), end in zip(out, ended.values(), strict=True):
                    key = "n_complete" if ret.status is JobStatus.COMPLETED else "n_failed"
                    self.counts[key] += 1
                    log.info("%s", finished_line(job, ret, end))
                return out
            if deadline is not None and time.monotonic() >= deadline:
                return []
            time.sleep(scheduler.pause_s(poll_s, len(by_id)))
        return []

    def _collect(self, job: PendingJob, ended: Ended) -> JobReturn:
        path = job.folder / RESULT
        if path.exists():
            with open(path, "rb") as f:
                ret: JobReturn = pickle.load(f)
            return ret
        tail = _tail(self._session().stderr_path(job.job_id))
        error = JobFailedError(
            f"job {job.job_id} ({' '.join(job.overrides)}) ended {ended.state} without a "
            f"result: {ended.reason}" + (f"\n--- end of its stderr ---\n{tail}" if tail else "")
        )
        ret = JobReturn(overrides=job.overrides, status=JobStatus.FAILED)
        ret.return_value = error
        return ret

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> list[JobReturn]:
        """Hydra's synchronous launch: submit all, wait for all (unless detached)."""
        # One submission per job: composing a job's config costs about 0.1 s, and the jobs
        # composed first start while the later ones are being composed.
        pending = [
            job
            for i, o in enumerate(job_overrides)
            for job in self.submit([(list(o), initial_job_idx + i, {})])
        ]
        if self.params.get("detach"):
            if self._session().mode != "daemon":
                log.warning("detach needs a daemon (scheduler.mode=daemon): waiting instead")
            else:
                log.info("detached: follow with `orch sweep wait %s`", self.sweep_id)
                out = []
                for p in pending:
                    ret = JobReturn(overrides=p.overrides, status=JobStatus.COMPLETED)
                    ret.return_value = Detached(self.sweep_id, p.job_id)
                    out.append(ret)
                return out
        results: dict[int, JobReturn] = {}
        waiting = list(pending)
        while waiting:
            for p, ret in self.wait_any(waiting):
                results[p.job_id] = ret
            waiting = [p for p in waiting if p.job_id not in results]
        self.summarise()
        return [results[p.job_id] for p in pending]

    def summarise(self, extra: Mapping[str, float] | None = None) -> None:
        """Write the sweep's counts (and ``extra``) on the parent run."""
        if self.parent is not None:
            self.parent.summarise(
                {**{k: float(v) for k, v in self.counts.items()}, **(extra or {})}
            )

    def cancel(self, jobs: Sequence[PendingJob]) -> None:
        scheduler = self._session()
        for job in jobs:
            scheduler.cancel(job.job_id)

    def close(self) -> None:
        if self.scheduler is not None:
            scheduler, self.scheduler = self.scheduler, None
            self._mark_ended(scheduler)
            scheduler.close()
        self._stop_forkserver()


def finished_line(job: PendingJob, ret: JobReturn, ended: Ended, width: int = 160) -> str:
    """The log line of a finished job: index, scheduler job, state, time since submission, and
    its return value (or why it failed, on one line)."""
    value = ret._return_value
    if ret.status is JobStatus.COMPLETED:
        state, shown = ended.state, repr(value)
    else:
        state = ended.state if ended.state != "COMPLETED" else "FAILED"
        first = str(value).strip().splitlines()[0] if str(value).strip() else ""
        shown = f"{type(value).__name__}: {first}" if isinstance(value, BaseException) else first
    if len(shown) > width:
        shown = shown[: width - 3] + "..."
    took = time.time() - job.submitted
    return f"#{job.idx} job {job.job_id} finished {state} in {took:.1f} s: {shown}"


def _pythonpath() -> str:
    """This process's PYTHONPATH with the plugins' root in front (jobs and the fork server
    import ``hydra_plugins.orch_launcher`` from it)."""
    current = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join(p for p in (str(_PLUGIN_ROOT), current) if p)


def _atomic_pickle(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        cloudpickle.dump(obj, f)
    tmp.replace(path)


def _tail(path: Path, size: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""
