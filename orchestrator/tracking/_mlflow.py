"""Batched MLflow logging, config flattening, environment tags and run resumption; where runs
go and what they are called, by MLflow's own conventions."""

from __future__ import annotations

import fcntl
import hashlib
import os
import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import SplitResult, urlsplit, urlunsplit

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from orchestrator.exceptions import OrchestratorError

__all__ = [
    "DEFAULT_EXPERIMENT",
    "ENV_TAGS",
    "EXPERIMENT_KIND_TAG",
    "MODEL_TRAINING_KIND",
    "BatchedLogger",
    "TrackingError",
    "check_tracking_uri",
    "connect",
    "default_experiment_name",
    "default_tracking_uri",
    "env_tags",
    "experiment_url",
    "flatten_params",
    "mark_model_training",
    "start_or_resume_run",
    "trial_run_name",
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

#: The experiment when neither ``tracking.experiment`` nor ``MLFLOW_EXPERIMENT_NAME`` names one.
DEFAULT_EXPERIMENT = "train"

#: MLflow's experiment tag for the kind of work an experiment holds (set by the MLflow UI's
#: experiment-type selector; the UIs before its GenAI / model-training switch chose the
#: experiment page by it, 3.17's ignores it: mlflow/mlflow#24498).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: Its value for model training ("Machine learning" in the UI), as opposed to
#: ``genai_development`` (traces, evaluation runs).
MODEL_TRAINING_KIND = "custom_model_development"

# The MLflow UI's own switch between its GenAI and model-training views (3.17 keeps it per
# browser, GenAI by default, and ignores the experiment's tag): a link can carry it.
_TRAINING_VIEW = "workflowType=machine_learning"

# Tracking URI schemes MLflow 3 resolves (mlflow.tracking._tracking_service.utils): REST servers,
# SQLAlchemy databases (with an optional ``+driver``) and Databricks. File stores are refused by
# MLflow 3 unless MLFLOW_ALLOW_FILE_STORE=true.
_SERVER_SCHEMES = ("http", "https")
_DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
_HOST_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")

# Overrides that say how a job runs or reports, not which trial it is: left out of run names.
_NOT_IN_RUN_NAMES = ("hydra", "tracking", "checkpoint", "run_name", "experiment")
_MAX_RUN_NAME = 250

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
    """The tracking store used when the config names none.

    The order, as MLflow's own clients have it: ``tracking.uri`` when given (the caller's
    ``uri or default_tracking_uri()``), else ``MLFLOW_TRACKING_URI``, else a SQLite file
    ``mlflow.db`` in ``folder``.

    Args:
        folder: Where the default database lives; the working folder by default.

    Returns:
        ``MLFLOW_TRACKING_URI`` when set, else a ``sqlite:///`` URI with an absolute path.

    Raises:
        TrackingError: Naming ``MLFLOW_TRACKING_URI`` when it is set but malformed.
    """
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return check_tracking_uri(from_env, field="MLFLOW_TRACKING_URI")
    base = Path(folder) if folder is not None else Path.cwd()
    return f"sqlite:///{(base / 'mlflow.db').resolve()}"


def default_experiment_name() -> str:
    """The experiment used when the config names none: ``MLFLOW_EXPERIMENT_NAME``, else
    :data:`DEFAULT_EXPERIMENT` (``"train"``)."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def _redacted(uri: str) -> str:
    # A password in the URI's user part (postgresql://user:secret@host/db) never reaches a message.
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*):[^/@]*@", r"\1:***@", uri)


def check_tracking_uri(uri: str, field: str = "tracking.uri") -> str:
    """Accept a well-formed tracking URI of any store MLflow 3 serves, refuse the rest.

    Accepted: ``http(s)://HOST[:PORT][/PREFIX]`` (any host: a lab's shared server is the normal
    case; credentials come from MLflow's own ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD`` / ``MLFLOW_TRACKING_TOKEN`` or ``~/.mlflow/credentials``),
    ``sqlite:///PATH`` (``sqlite:////ABS`` absolute), ``postgresql|mysql|mssql[+DRIVER]://...``,
    ``databricks[://PROFILE]``. Refused: anything else, with what to write instead, e.g. a
    host-less ``http://:5000``, a port that is not a number, a bare path or ``file://`` store
    (MLflow 3 refuses those unless ``MLFLOW_ALLOW_FILE_STORE=true``), spaces.

    Args:
        uri: The tracking URI.
        field: Where it came from, for the error (``"tracking.uri"``, ``"MLFLOW_TRACKING_URI"``).

    Returns:
        The URI, unchanged.

    Raises:
        TrackingError: Naming ``field`` when the URI is malformed (a password in it is masked).
    """
    shown = _redacted(uri)

    def refuse(reason: str) -> TrackingError:
        return TrackingError(field, shown, reason)

    forms = (
        "use http(s)://HOST:PORT for a tracking server, sqlite:///ABS/PATH/mlflow.db, "
        "postgresql://USER@HOST/DB (or mysql://, mssql://) or databricks"
    )
    if not uri or uri != uri.strip() or any(c.isspace() for c in uri):
        raise refuse(f"a URI has no spaces and is not empty; {forms}")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - parsing it refuses a port that is not a number in 0-65535
    except ValueError as e:
        raise refuse(f"{e}; {forms}") from None
    scheme = parts.scheme.lower()
    base = scheme.split("+", 1)[0]
    if scheme in _SERVER_SCHEMES:
        _check_host(parts, refuse, example=f"{scheme}://mlflow.example.org:5000")
        return uri
    if base == "sqlite":
        if not uri.startswith(f"{parts.scheme}:///") or len(uri) == len(f"{parts.scheme}:///"):
            raise refuse("a SQLite store needs a path: sqlite:///ABS/PATH/mlflow.db")
        return uri
    if base in _DATABASE_SCHEMES:
        _check_host(parts, refuse, example=f"{base}://USER@HOST:PORT/DATABASE")
        return uri
    if scheme == "databricks" or uri == "databricks":
        return uri
    if scheme in ("", "file"):
        if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("1", "true"):
            return uri  # MLflow's own opt-out
        raise refuse(f"MLflow 3 refuses file stores (unless MLFLOW_ALLOW_FILE_STORE=true); {forms}")
    raise refuse(f"unknown scheme {parts.scheme!r}; {forms}")


def _check_host(
    parts: SplitResult, refuse: Callable[[str], TrackingError], *, example: str
) -> None:
    # Any host: a name, an IPv4 or a bracketed IPv6 address (its port was parsed already).
    host = parts.hostname or ""
    if not host:
        raise refuse(f"no host; for example {example}")
    if ":" not in host and not _HOST_NAME.match(host):
        raise refuse(f"{host!r} is not a host name or address; for example {example}")


def connect(uri: str, field: str = "tracking.uri") -> MlflowClient:
    """A client on a checked tracking URI, its store created and ready.

    MLflow creates and migrates a SQLite store's tables on first use, and two jobs doing so at
    once (a sweep starting trials on a fresh ``mlflow.db``) race and fail; the first use is
    therefore serialised by an exclusive lock on ``<db>.lock`` beside the database. A tracking
    server is asked one cheap question (the first experiment) so that refused credentials or a
    host name the server does not answer to fail here, in words that say what to set.

    Args:
        uri: A tracking URI (see :func:`check_tracking_uri`).
        field: Where the URI came from, for errors.

    Returns:
        The client.

    Raises:
        TrackingError: When the URI is malformed, or the server refuses the credentials
            (field ``MLFLOW_TRACKING_USERNAME``) or the host name (field ``field``).
    """
    check_tracking_uri(uri, field)
    scheme = urlsplit(uri).scheme.lower()
    if scheme in _SERVER_SCHEMES:
        client = MlflowClient(tracking_uri=uri)
        try:
            client.search_experiments(max_results=1)
        except MlflowException as e:
            raise _server_refusal(uri, field, e) from e
        return client
    if not scheme.startswith("sqlite"):
        return MlflowClient(tracking_uri=uri)
    db = Path(uri.split(":///", 1)[1])
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


def _server_refusal(uri: str, field: str, error: MlflowException) -> Exception:
    # A tracking server's refusal in words that say what to set; any other error as it came.
    from mlflow.utils.credentials import read_mlflow_creds

    shown = _redacted(uri)
    if error.error_code == "UNAUTHENTICATED":  # HTTP 401
        user = read_mlflow_creds().username
        given = (
            f"refused the credentials of user {user!r}"
            if user
            else "needs a login and no credentials were given"
        )
        return TrackingError(
            "MLFLOW_TRACKING_USERNAME",
            user,
            f"the tracking server {shown} {given} (HTTP 401); set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN, or ~/.mlflow/credentials) to "
            "an account on that server",
        )
    if error.error_code == "PERMISSION_DENIED" and "Invalid Host header" in error.message:
        host = urlsplit(uri).netloc.rpartition("@")[2]
        return TrackingError(
            field,
            shown,
            f"the tracking server refuses requests addressed to {host!r} (MLflow's DNS-rebinding "
            f"guard); its admin must start it with --allowed-hosts {host} (or "
            "MLFLOW_SERVER_ALLOWED_HOSTS), or use a name it allows",
        )
    if error.error_code == "ENDPOINT_NOT_FOUND":  # HTTP 404: something else serves that URI
        return TrackingError(
            field,
            shown,
            "no MLflow tracking server answers there (HTTP 404 for its REST API); check the "
            "host, the port and the path prefix (the server's --static-prefix, if any)",
        )
    return error


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
    experiment: str | None,
    run_name: str,
    tags: Mapping[str, str],
    run_id: str | None = None,
) -> str:
    """Open a new run, or reopen ``run_id`` so a resumed job keeps logging to the same run.

    The experiment is marked as model training (:func:`mark_model_training`) whether it is
    created here or was there before.

    Args:
        client: A client on the tracking store.
        experiment: Experiment name, created when missing; ``None``:
            :func:`default_experiment_name` (``MLFLOW_EXPERIMENT_NAME``, else ``"train"``).
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
            run = client.get_run(run_id)
        except MlflowException as e:
            raise TrackingError(
                "checkpoint.run_id",
                run_id,
                "the checkpoint's MLflow run is not in this tracking store; resume with the same "
                "tracking.uri, or start afresh with checkpoint.resume=false",
            ) from e
        mark_model_training(client, run.info.experiment_id)
        client.update_run(run_id, status="RUNNING")
        return run_id
    name = experiment or default_experiment_name()
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            experiment_id = client.create_experiment(
                name, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
            )
        except MlflowException as e:  # made by another job of the sweep in the meantime
            found = client.get_experiment_by_name(name)
            if e.error_code != "RESOURCE_ALREADY_EXISTS" or found is None:
                raise
    if found is not None:
        experiment_id = found.experiment_id
        if EXPERIMENT_KIND_TAG not in found.tags:
            client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    run = client.create_run(experiment_id, tags=dict(tags), run_name=run_name)
    return str(run.info.run_id)


def mark_model_training(client: MlflowClient, experiment_id: str) -> None:
    """Tag an experiment as model training (:data:`EXPERIMENT_KIND_TAG`) unless it has a kind.

    MLflow 3's UI opens an experiment in its GenAI view (traces, evaluation runs) or its
    model-training view (runs table, charts); the tag is MLflow's record of which an experiment
    is. A kind already set (a user's choice in the UI) is left alone.

    Args:
        client: A client on the tracking store.
        experiment_id: The experiment.
    """
    if EXPERIMENT_KIND_TAG not in client.get_experiment(experiment_id).tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)


def experiment_url(uri: str, experiment_id: str, run_id: str | None = None) -> str | None:
    """The MLflow UI's page of an experiment's runs (or of one run), in its model-training view.

    MLflow 3.17's UI chooses between its GenAI and model-training views by a switch kept per
    browser (GenAI until the user flips it), not by the experiment's kind tag; the link carries
    ``workflowType=machine_learning`` so that it opens on the runs table whatever the browser
    last showed.

    Args:
        uri: The tracking URI.
        experiment_id: The experiment.
        run_id: A run of it, for the run's own page.

    Returns:
        The link, or ``None`` when the store is not a tracking server (no UI to open).

    Example:
        >>> experiment_url("http://127.0.0.1:5000", "3")
        'http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning'
    """
    parts = urlsplit(uri)
    if parts.scheme.lower() not in _SERVER_SCHEMES:
        return None
    netloc = parts.netloc.rpartition("@")[2]  # never a password in a printed link
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    page = f"#/experiments/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")
    return f"{base}/{page}?{_TRAINING_VIEW}"


def trial_run_name(overrides: Sequence[str]) -> str | None:
    """A run name from the Hydra overrides of one trial of a sweep: every value it was given.

    ``key=value`` pairs joined by commas, sorted (so the same trial gets the same name however
    its overrides were ordered), each key shortened to its last part (``optimizer.lr`` to
    ``lr``) unless two keys of the trial share that part; numbers with a fraction kept to six
    significant digits. Overrides that say how a job runs or reports rather than what it is
    (``tracking.*``, ``checkpoint.*``, ``hydra.*``, ``run_name``, the ``experiment`` preset) are
    left out. A name longer than 250 characters is cut and ends with a hash of the whole.

    Args:
        overrides: The trial's overrides (``HydraConfig.get().overrides.task``).

    Returns:
        The name, or ``None`` when no override is left.

    Example:
        >>> trial_run_name(["optimizer=kfac", "nodes=2", "optimizer.lr=0.0123456789"])
        'lr=0.0123457,nodes=2,optimizer=kfac'
    """
    items: list[tuple[str, str]] = []
    for text in overrides:
        key, has_value, value = text.strip().partition("=")
        key = key.lstrip("+")
        root = re.split(r"[./]", key.lstrip("~"), maxsplit=1)[0]
        if root in _NOT_IN_RUN_NAMES:
            continue
        items.append((key, _short_value(value) if has_value else ""))
    if not items:
        return None
    last = Counter(_last_part(key) for key, _ in items)
    shown = sorted(
        (_last_part(key) if last[_last_part(key)] == 1 else key, value) for key, value in items
    )
    name = ",".join(f"{key}={value}" if value else key for key, value in shown)
    if len(name) > _MAX_RUN_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[: _MAX_RUN_NAME - 9]}~{digest}"
    return name


def _last_part(key: str) -> str:
    deleted = key.startswith("~")
    part = key.lstrip("~").rsplit(".", 1)[-1]
    return f"~{part}" if deleted else part


def _short_value(value: str) -> str:
    value = value.strip()
    if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][-+]?\d+)", value):
        return f"{float(value):.6g}"
    return value


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
