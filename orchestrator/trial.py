"""The trial an app runs as, under the ``orch_optuna`` sweeper: report, prune, read parameters.

Any app a sweep runs (a Hydra app of your own, not only ``sweeps.train``) uses it the same way::

    from orchestrator import trial

    for step in range(1, steps + 1):
        loss = train_one_epoch()
        trial.report(loss, step)  # an intermediate value, for the study's pruner
        if trial.should_prune():  # the pruner says stop: the trial ends PRUNED
            break
    print(trial.params)  # the parameters the sampler chose, e.g. {"optimizer.lr": 0.01}

- :func:`report` reports the intermediate value at ``step`` (a number, or a mapping of metrics
  from which the sweep's ``hydra.sweeper.report`` metric is taken).
- :func:`should_prune` asks the study's pruner (the sweeper's ``hydra.sweeper.pruner``); once it
  says True the trial counts as pruned, however the job then ends (it may return, or raise
  ``optuna.TrialPruned``).
- :data:`params` is the trial's sampled parameters (read-only), keyed like the sweeper's
  ``params`` (``optimizer.lr``; a command line's ``+x`` is ``x``).
- :func:`set_metrics` leaves final metrics on the trial, where the sweeper looks for
  ``hydra.sweeper.objectives`` that the task's return value does not hold.

Outside a sweep it is a no-op: :func:`report` and :func:`set_metrics` do nothing,
:func:`should_prune` is False, :data:`params` is empty; the same app runs alone unchanged. In a
job of several ranks only rank 0 (``RANK`` unset or 0) talks to the study: on the others
:func:`should_prune` is False, so share rank 0's answer (a broadcast) before leaving a loop that
has collectives. A reported value that is not finite, or a study with several objectives (Optuna
cannot prune those), reports nothing.

How it works: the sweeper and the job are different processes, often on different nodes. They
meet in the study's storage (an RDB URL, a Journal file on a shared file system, or Optuna's
gRPC storage proxy): the sweeper puts the storage, study, trial id and sampled parameters in the
job's environment (:data:`ENV_STORAGE`, :data:`ENV_STUDY`, :data:`ENV_TRIAL_ID`,
:data:`ENV_PARAMS`); the first :func:`report` opens the study there (rebuilding the sweeper's
pruner from the study attribute ``orch.pruner``, so the job decides exactly as the sweeper's
pruner would); the sweeper then tells Optuna each trial's outcome when its job ends.

Importing this module loads nothing heavy (standard library only): Optuna is imported on the
first call made inside a sweep. The sweeper's side uses :func:`open_storage`, :func:`make_pruner`
and :class:`TrialLink` from here too.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Self

from orchestrator.exceptions import OrchestratorError

if TYPE_CHECKING:
    import optuna

__all__ = ["params", "report", "set_metrics", "should_prune"]

ENV_STORAGE = "ORCH_OPTUNA_STORAGE"
ENV_STUDY = "ORCH_OPTUNA_STUDY"
ENV_TRIAL_ID = "ORCH_OPTUNA_TRIAL_ID"
ENV_PARAMS = "ORCH_OPTUNA_PARAMS"
"""The trial's sampled parameters, as a JSON object."""
PRUNERS = ("none", "median", "sha", "asha", "hyperband")
PRUNED = "pruned"
"""The trial attribute ``orch.status`` of a trial its pruner stopped (the sweeper reads it)."""

log = logging.getLogger(__name__)

_EMPTY: Mapping[str, Any] = MappingProxyType({})


# -- the app's side -------------------------------------------------------------------------------

if TYPE_CHECKING:
    params: Mapping[str, Any]
    """The trial's sampled parameters (read-only; empty outside a sweep)."""
else:

    def __getattr__(name: str) -> Any:
        # ``params`` is read from the environment at each access: in-process launchers run
        # several trials in one process, one after the other.
        if name == "params":
            return _params()
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*globals(), "params"])


def report(value: float | Mapping[str, float], step: int) -> None:
    """Report the intermediate value at ``step`` to the study's pruner (a no-op outside a sweep).

    Args:
        value: The value the pruner compares (in the study's direction: with
            ``hydra.sweeper.direction=minimize`` report a loss, with ``maximize`` an accuracy),
            or a mapping of metrics: then the sweep's ``hydra.sweeper.report`` metric is taken
            from it (none reported when it is absent). A value that is not finite is not
            reported.
        step: A non-negative integer (an epoch, a step); a step reported twice keeps its first
            value.

    Raises:
        TypeError: ``step`` is not an integer, or ``value`` is not a number or a mapping.
        ValueError: ``step`` is negative.
    """
    step = _check_step(step)
    if not isinstance(value, Mapping):
        float(value)  # a wrong type shows outside a sweep too, not first on the cluster
    link = _link()
    if link is not None:
        link.put(value, step)


def should_prune() -> bool:
    """Whether the study's pruner says stop now, from the values reported so far.

    Once True the trial counts as pruned (the sweeper tells Optuna PRUNED when the job ends,
    whatever the job returns), and stays True. False outside a sweep, before any report, on a
    rank other than 0, and in a study with several objectives.
    """
    link = _link()
    return link is not None and link.should_prune()


def set_metrics(metrics: Mapping[str, Any]) -> None:
    """Leave the job's final metrics on the trial (numbers only; a no-op outside a sweep).

    The sweeper takes the values of ``hydra.sweeper.objectives`` from these where the task's
    return value (a number, or a mapping of metrics) does not hold them.
    """
    link = _link()
    if link is not None:
        link.set_metrics(metrics)


def _check_step(step: int) -> int:
    if isinstance(step, bool):
        raise TypeError(f"step must be an integer, got {step!r}")
    try:
        index = operator.index(step)
    except TypeError:
        raise TypeError(f"step must be an integer, got {step!r}") from None
    if index < 0:
        raise ValueError(f"step must be 0 or more, got {index}")
    return index


def _params() -> Mapping[str, Any]:
    text = os.environ.get(ENV_PARAMS)
    if not text or _env_key() is None:
        return _EMPTY
    loaded = json.loads(text)
    return MappingProxyType(dict(loaded)) if isinstance(loaded, dict) else _EMPTY


def _env_key() -> tuple[str, str, str] | None:
    key = tuple(os.environ.get(name, "") for name in (ENV_STORAGE, ENV_STUDY, ENV_TRIAL_ID))
    return (key[0], key[1], key[2]) if all(key) else None


_lock = threading.Lock()
_open: dict[tuple[int, str, str, str], TrialLink] = {}
"""The link this process opened (one at most), by process id and trial."""


def _link() -> TrialLink | None:
    """This process's link to its trial (rank 0 in a sweep), opened at the first call."""
    key = _env_key()
    if key is None or os.environ.get("RANK", "0") not in ("", "0"):
        return None
    # Keyed by the process too: a storage connection must not cross a fork.
    full = (os.getpid(), *key)
    with _lock:
        link = _open.get(full)
        if link is None:
            _open.clear()  # an in-process launcher's next trial: forget the last one
            link = _open[full] = TrialLink.open(*key)
        return link


# -- the study's storage and pruner (the sweeper's side too) ---------------------------------------


class SweepConfigError(OrchestratorError, ValueError):
    """A sweeper setting is invalid: names the field and a valid example."""

    def __init__(self, field: str, value: object, reason: str, example: str) -> None:
        self.field = field
        super().__init__(f"invalid {field}={value!r}: {reason} (for example: {example})")


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """The Optuna storage named by ``spec``.

    Args:
        spec: ``sqlite:///ABS.db`` or any SQLAlchemy URL (RDB storage); ``journal:PATH`` or a
            path ending in ``.journal`` / ``.log`` (Journal file storage, best for many
            processes on one shared file system); ``grpc://HOST:PORT`` (Optuna's gRPC storage
            proxy, for nodes without a shared file system; needs ``grpcio``).

    Raises:
        SweepConfigError: an unknown form, or the gRPC client missing.
    """
    import optuna
    import optuna.storages.journal

    if spec.startswith("grpc://"):
        host, _, port = spec.removeprefix("grpc://").partition(":")
        try:
            import grpc  # type: ignore[import-untyped]  # noqa: F401 - fail early, clearly
        except ImportError as e:
            raise SweepConfigError(
                "hydra.sweeper.storage",
                spec,
                "the gRPC storage proxy needs grpcio (pip install grpcio), or use a shared "
                "Journal file",
                "journal:/shared/study.journal",
            ) from e
        return optuna.storages.GrpcStorageProxy(host=host or "localhost", port=int(port or 13000))
    if spec.startswith("journal:") or spec.endswith((".journal", ".log")):
        path = Path(spec.removeprefix("journal:")).expanduser().absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(path))
        return optuna.storages.JournalStorage(backend)
    if "://" in spec:
        if spec.startswith("sqlite:///"):
            Path(spec.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # A generous lock timeout: many trial jobs write one SQLite file at once.
        kwargs = {"connect_args": {"timeout": 60}} if spec.startswith("sqlite") else {}
        return optuna.storages.RDBStorage(spec, engine_kwargs=kwargs)
    raise SweepConfigError(
        "hydra.sweeper.storage",
        spec,
        "expected sqlite:///ABS.db, a SQLAlchemy URL, journal:PATH or grpc://HOST:PORT",
        "journal:optuna/hpo.journal",
    )


def make_pruner(spec: Mapping[str, Any] | None) -> optuna.pruners.BasePruner:
    """A pruner from its settings (``name`` plus that pruner's own arguments).

    Raises:
        SweepConfigError: an unknown name (names ``hydra.sweeper.pruner.name``).
    """
    import optuna

    spec = dict(spec or {})
    name = spec.get("name") or "none"
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=int(spec.get("n_startup_trials", 5)),
            n_warmup_steps=int(spec.get("n_warmup_steps", 0)),
            interval_steps=int(spec.get("interval_steps", 1)),
        )
    if name in ("sha", "asha"):
        # Optuna's SuccessiveHalvingPruner is the asynchronous variant (ASHA): a trial is
        # promoted or stopped at each rung without waiting for a full bracket.
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec.get("min_resource", "auto"),
            reduction_factor=int(spec.get("reduction_factor", 3)),
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=int(spec.get("min_resource", 1) or 1),
            max_resource=spec.get("max_resource", "auto"),
            reduction_factor=int(spec.get("reduction_factor", 3)),
        )
    raise SweepConfigError(
        "hydra.sweeper.pruner.name", name, f"expected one of {', '.join(PRUNERS)}", "median"
    )


class TrialLink:
    """A running job's handle on its trial (what the module's functions use on rank 0).

    Args:
        study: The loaded study (with the sweeper's pruner).
        trial_id: The trial's storage id.
        report_metric: The metric taken from a mapping of metrics as the intermediate value.
    """

    def __init__(self, study: optuna.Study, trial_id: int, report_metric: str) -> None:
        import optuna

        self.study = study
        self.trial = optuna.trial.Trial(study, trial_id)
        self.report_metric = report_metric
        self.can_prune = len(study.directions) == 1
        self.reports = 0
        self.pruned = False
        self._warned = False

    @classmethod
    def open(cls, storage_spec: str, study_name: str, trial_id: int | str) -> Self:
        """The link to trial ``trial_id`` of study ``study_name`` in ``storage_spec``."""
        import optuna

        storage = open_storage(storage_spec)
        attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(study_name))
        study = optuna.load_study(
            study_name=study_name, storage=storage, pruner=make_pruner(attrs.get("orch.pruner"))
        )
        return cls(study, int(trial_id), str(attrs.get("orch.report", "val_accuracy")))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self | None:
        """The link the sweeper set up in the environment, or None for a plain job."""
        env = os.environ if environ is None else environ
        key = [env.get(name, "") for name in (ENV_STORAGE, ENV_STUDY, ENV_TRIAL_ID)]
        return cls.open(*key) if all(key) else None

    def put(self, value: float | Mapping[str, float], step: int) -> bool:
        """Report the intermediate value at ``step`` (see :func:`report`); True: reported."""
        if isinstance(value, Mapping):
            if self.report_metric not in value:
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "trial.report: no %r among the metrics %s: nothing reported (set "
                        "hydra.sweeper.report to one of them)",
                        self.report_metric,
                        sorted(value),
                    )
                return False
            value = value[self.report_metric]
            if value is None:
                return False
        number = float(value)
        if not self.can_prune or not math.isfinite(number):
            return False
        self.trial.report(number, step)
        self.reports += 1
        return True

    def should_prune(self) -> bool:
        """The pruner's answer (see :func:`should_prune`); True marks the trial pruned."""
        if not self.can_prune:
            return False
        if not self.pruned and self.trial.should_prune():
            self.trial.set_user_attr("orch.status", PRUNED)
            self.pruned = True
        return self.pruned

    def set_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Leave the numeric ``metrics`` on the trial (attribute ``orch.metrics``)."""
        numbers = {
            str(k): float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        self.trial.set_user_attr("orch.metrics", numbers)
