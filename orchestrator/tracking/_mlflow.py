"""Batched MLflow logging, config flattening, environment tags and run resumption."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import queue
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from orchestrator.exceptions import OrchestratorError

__all__ = [
    "ENV_TAGS",
    "BatchedLogger",
    "TrackingError",
    "check_tracking_uri",
    "connect",
    "default_tracking_uri",
    "env_tags",
    "flatten_params",
    "start_or_resume_run",
]

# MLflow's own limits on one log_batch call (mlflow.utils.validation): 1,000 metrics, 100 params
# or tags, 1,000 entities in all, 6,000 characters per param value.
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100
_MAX_PARAM_VALUE = 6000

#: Environment variables set by our backends, and the MLflow tag each one becomes.
ENV_TAGS: dict[str, str] = {
    "ORCH_CLUSTER": "cluster",
    "ORCH_JOB_ID": "job_id",
    "ORCH_NUM_NODES": "nodes",
    "ORCH_NODELIST": "block",
}

_T = TypeVar("_T")


class TrackingError(OrchestratorError, ValueError):
    """A tracking setting is unusable, or a run to resume does not exist.

    Args:
        field: The config field at fault, e.g. ``"tracking.uri"``.
        value: The value that was given.
        reason: What is wrong and how to fix it.
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"invalid {field}={value!r}: {reason}")


def default_tracking_uri(folder: str | os.PathLike[str] | None = None) -> str:
    """Return the default store: a SQLite file ``mlflow.db`` in ``folder`` (default: cwd).

    Args:
        folder: Where the database lives; the project folder by default.

    Returns:
        A ``sqlite:///`` URI with an absolute path.
    """
    base = Path(folder) if folder is not None else Path.cwd()
    return f"sqlite:///{(base / 'mlflow.db').resolve()}"


def check_tracking_uri(uri: str) -> str:
    """Accept a local SQLite store or a server on the loopback interface, refuse the rest.

    Training jobs must never ship metrics to a remote host by accident (a typo in a sweep would
    otherwise leak data off the cluster), so only ``sqlite:///`` paths and ``http(s)`` servers on
    ``localhost`` / a loopback address pass.

    Args:
        uri: The tracking URI from the config.

    Returns:
        The URI, unchanged.

    Raises:
        TrackingError: Naming ``tracking.uri`` when the URI is not local.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise TrackingError(
                "tracking.uri", uri, "a SQLite store needs a path: sqlite:///ABS/PATH/mlflow.db"
            )
        return uri
    if parsed.scheme in ("http", "https"):
        host = parsed.hostname or ""
        if host == "localhost" or _is_loopback(host):
            return uri
        raise TrackingError(
            "tracking.uri",
            uri,
            f"host {host!r} is not local; jobs log only to a server on 127.0.0.1 or localhost "
            "(for example tracking.uri=http://127.0.0.1:5000) or to sqlite:///ABS/mlflow.db",
        )
    raise TrackingError(
        "tracking.uri",
        uri,
        "use sqlite:///ABS/PATH/mlflow.db or http://127.0.0.1:PORT (file:// stores are refused "
        "by MLflow 3)",
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect(uri: str) -> MlflowClient:
    """A client on a checked tracking URI, its store created and ready.

    MLflow creates and migrates a SQLite store's tables on first use, and two jobs doing so at
    once (a sweep starting trials on a fresh ``mlflow.db``) race and fail; the first use is
    therefore serialised by an exclusive lock on ``<db>.lock`` beside the database.

    Args:
        uri: A tracking URI (see :func:`check_tracking_uri`).

    Returns:
        The client.

    Raises:
        TrackingError: When the URI is not local.
    """
    check_tracking_uri(uri)
    if not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri)
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as lock:
        # The client may build its store (and migrate the tables) as soon as it is made.
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


def flatten_params(config: Mapping[str, object], prefix: str = "") -> dict[str, str]:
    """Flatten a nested config into dotted MLflow params.

    Args:
        config: A nested mapping (e.g. ``OmegaConf.to_container(cfg, resolve=True)``).
        prefix: Prepended to every key, used by the recursion.

    Returns:
        ``{"optimizer.lr": "0.1", ...}``; lists become their ``repr``, values are cut to MLflow's
        6,000 character limit, ``None`` becomes ``"None"``.

    Example:
        >>> flatten_params({"a": {"b": 1, "c": [1, 2]}, "d": None})
        {'a.b': '1', 'a.c': '[1, 2]', 'd': 'None'}
    """
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, prefix=f"{name}."))
        else:
            out[name] = str(value)[:_MAX_PARAM_VALUE]
    return out


def env_tags(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Read the cluster, job id, node count and node list our backends export.

    Args:
        environ: The environment to read; ``os.environ`` by default.

    Returns:
        Tags ``cluster``, ``job_id``, ``nodes``, ``block`` for the variables that are set.
    """
    env = os.environ if environ is None else environ
    return {tag: env[var] for var, tag in ENV_TAGS.items() if env.get(var)}


def _chunks(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def start_or_resume_run(
    client: MlflowClient,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str],
    run_id: str | None = None,
) -> str:
    """Open a new run, or reopen ``run_id`` so a resumed job keeps logging to the same run.

    Args:
        client: A client on the tracking store.
        experiment: Experiment name; created when missing.
        run_name: Name of a new run.
        tags: Tags of a new run (a resumed run keeps its own).
        run_id: The run recorded in a checkpoint, or ``None`` for a new run.

    Returns:
        The run id.

    Raises:
        TrackingError: When ``run_id`` is not in the store (the checkpoint belongs to another
            tracking store).
    """
    if run_id is not None:
        try:
            client.get_run(run_id)
        except MlflowException as e:
            raise TrackingError(
                "checkpoint.run_id",
                run_id,
                "the checkpoint's MLflow run is not in this tracking store; resume with the same "
                "tracking.uri, or start afresh with checkpoint.resume=false",
            ) from e
        client.update_run(run_id, status="RUNNING")
        return run_id
    found = client.get_experiment_by_name(experiment)
    experiment_id = (
        found.experiment_id if found is not None else client.create_experiment(experiment)
    )
    run = client.create_run(experiment_id, tags=dict(tags), run_name=run_name)
    return str(run.info.run_id)


_Batch = tuple[list[Metric], list[Param], list[RunTag]]


class BatchedLogger:
    """Buffers metrics and writes them with one ``log_batch`` call per flush.

    With ``background=True`` (the default) the calls are made by one worker thread, in order, so
    the training loop pays only for queueing: a ``log_batch`` costs tens of milliseconds against
    a SQLite store or a server, as much as many training steps of a small model. The worker's
    first error is raised again by :meth:`wait` and :meth:`finish`, never swallowed.

    The public methods are meant for one owner thread (the training loop). Only rank 0 of a
    data-parallel job should hold one. ``calls`` counts the ``log_batch`` calls made, so tests
    and benchmarks can check that logging is batched.

    Args:
        client: A client on the tracking store.
        run_id: The run to log to.
        background: Write from a worker thread (``False``: write in the calling thread).
    """

    def __init__(self, client: MlflowClient, run_id: str, *, background: bool = True) -> None:
        self.client = client
        self.run_id = run_id
        self.calls = 0
        self._metrics: list[Metric] = []
        self._error: BaseException | None = None
        self._queue: queue.Queue[_Batch | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._work, name="mlflow-logger", daemon=True)
            self._thread.start()

    def _send(self, batch: _Batch) -> None:
        metrics, params, tags = batch
        self.client.log_batch(
            self.run_id, metrics=metrics, params=params, tags=tags, synchronous=True
        )
        self.calls += 1

    def _work(self) -> None:
        while True:
            batch = self._queue.get()
            try:
                if batch is None:
                    return
                if self._error is None:  # after a failure, drop the rest: the owner will raise
                    self._send(batch)
            except BaseException as e:  # handed to the owner thread by wait()
                self._error = e
            finally:
                self._queue.task_done()

    def _submit(self, batch: _Batch) -> None:
        if self._thread is None:
            self._send(batch)
            return
        self._raise_error()
        self._queue.put(batch)

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def log_metrics(
        self, metrics: Mapping[str, float], step: int, timestamp_ms: int | None = None
    ) -> None:
        """Buffer metrics at ``step``; nothing is sent until :meth:`flush`.

        Args:
            metrics: Name to value.
            step: The global training step the values belong to.
            timestamp_ms: Wall-clock time in milliseconds; now by default.
        """
        stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        self._metrics.extend(
            Metric(key=k, value=float(v), timestamp=stamp, step=step) for k, v in metrics.items()
        )

    def log_params(self, params: Mapping[str, str]) -> None:
        """Send params, 100 per call (MLflow's limit).

        Args:
            params: Name to value, already flattened (see :func:`flatten_params`).
        """
        items = [Param(k, v) for k, v in params.items()]
        for chunk in _chunks(items, _MAX_PARAMS_PER_BATCH):
            self._submit(([], list(chunk), []))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Send tags, 100 per call.

        Args:
            tags: Name to value.
        """
        items = [RunTag(k, v) for k, v in tags.items()]
        for chunk in _chunks(items, _MAX_PARAMS_PER_BATCH):
            self._submit(([], [], list(chunk)))

    @property
    def pending(self) -> int:
        """Number of buffered metric values not yet handed to :meth:`flush`."""
        return len(self._metrics)

    def flush(self) -> None:
        """Send the buffered metrics, at most 1,000 per ``log_batch`` call."""
        buffered, self._metrics = self._metrics, []
        for chunk in _chunks(buffered, _MAX_METRICS_PER_BATCH):
            self._submit((list(chunk), [], []))

    def wait(self) -> None:
        """Block until every submitted call is made; raise the worker's error if one failed."""
        if self._thread is not None:
            self._queue.join()
        self._raise_error()

    def close(self) -> None:
        """Wait for pending calls, then stop the worker thread."""
        try:
            self.wait()
        finally:
            if self._thread is not None and self._thread.is_alive():
                self._queue.put(None)
                self._thread.join()

    def finish(self, status: str = "FINISHED") -> None:
        """Flush, wait, mark the run terminated and stop the worker.

        Args:
            status: ``FINISHED``, ``FAILED`` or ``KILLED`` (a preempted job that will resume).
        """
        self.flush()
        try:
            self.wait()
        finally:
            self.close()
        self.client.set_terminated(self.run_id, status=status)
