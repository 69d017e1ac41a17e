"""Batched MLflow logging, config flattening, environment tags and run resumption."""

from __future__ import annotations

import ipaddress
import os
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


class BatchedLogger:
    """Buffers metrics and writes them with one ``log_batch`` call per flush.

    Not thread-safe: one training loop owns it. Only rank 0 of a data-parallel job should hold
    one. ``calls`` counts the ``log_batch`` calls made, so tests and benchmarks can check that
    logging is batched.

    Args:
        client: A client on the tracking store.
        run_id: The run to log to.
    """

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.calls = 0
        self._metrics: list[Metric] = []

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
        """Send params at once, 100 per call (MLflow's limit).

        Args:
            params: Name to value, already flattened (see :func:`flatten_params`).
        """
        items = [Param(k, v) for k, v in params.items()]
        for chunk in _chunks(items, _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk, synchronous=True)
            self.calls += 1

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Send tags at once, 100 per call.

        Args:
            tags: Name to value.
        """
        items = [RunTag(k, v) for k, v in tags.items()]
        for chunk in _chunks(items, _MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=chunk, synchronous=True)
            self.calls += 1

    @property
    def pending(self) -> int:
        """Number of buffered metric values."""
        return len(self._metrics)

    def flush(self) -> None:
        """Send the buffered metrics, at most 1,000 per ``log_batch`` call."""
        buffered, self._metrics = self._metrics, []
        for chunk in _chunks(buffered, _MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)
            self.calls += 1

    def finish(self, status: str = "FINISHED") -> None:
        """Flush and mark the run terminated.

        Args:
            status: ``FINISHED``, ``FAILED`` or ``KILLED`` (a preempted job that will resume).
        """
        self.flush()
        self.client.set_terminated(self.run_id, status=status)
