"""The training job's side of an Optuna trial run by the ``orch_optuna`` sweeper.

The sweeper asks Optuna for a trial and starts a cluster job for it; the job and the sweeper are
different processes, often on different nodes. They meet in the study's storage (an RDB URL, a
Journal file on a shared file system, or Optuna's gRPC storage proxy): the job reports
intermediate values there and asks the study's pruner whether to stop, and leaves its final
metrics as trial attributes; the sweeper then tells the trial's outcome.

The job finds its trial through environment variables the sweeper sets (:data:`ENV_STORAGE`,
:data:`ENV_STUDY`, :data:`ENV_TRIAL_ID`); without them :meth:`TrialLink.from_env` returns None
and the job runs as a plain job. The pruner's settings travel as a study attribute
(``orch.pruner``), so the job decides exactly as the sweeper's pruner would.

Nothing here imports torch or the scheduler.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import optuna.storages.journal

from orchestrator.exceptions import OrchestratorError

__all__ = [
    "ENV_STORAGE",
    "ENV_STUDY",
    "ENV_TRIAL_ID",
    "PRUNERS",
    "SweepConfigError",
    "TrialLink",
    "make_pruner",
    "open_storage",
]

ENV_STORAGE = "ORCH_OPTUNA_STORAGE"
ENV_STUDY = "ORCH_OPTUNA_STUDY"
ENV_TRIAL_ID = "ORCH_OPTUNA_TRIAL_ID"
PRUNERS = ("none", "median", "sha", "asha", "hyperband")


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
    """A running job's handle on its trial.

    Args:
        study: The loaded study (with the sweeper's pruner).
        trial_id: The trial's storage id.
        report_metric: The metric the job reports as the intermediate value.
    """

    def __init__(self, study: optuna.Study, trial_id: int, report_metric: str) -> None:
        self.study = study
        self.trial = optuna.trial.Trial(study, trial_id)
        self.report_metric = report_metric
        self.can_prune = len(study.directions) == 1
        self.reports = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrialLink | None:
        """The link the sweeper set up in the environment, or None for a plain job."""
        env = os.environ if environ is None else environ
        if not env.get(ENV_STORAGE) or not env.get(ENV_STUDY) or not env.get(ENV_TRIAL_ID):
            return None
        storage = open_storage(env[ENV_STORAGE])
        study_id = storage.get_study_id_from_name(env[ENV_STUDY])
        attrs = storage.get_study_user_attrs(study_id)
        study = optuna.load_study(
            study_name=env[ENV_STUDY],
            storage=storage,
            pruner=make_pruner(attrs.get("orch.pruner")),
        )
        return cls(study, int(env[ENV_TRIAL_ID]), str(attrs.get("orch.report", "val_accuracy")))

    def report(self, metrics: Mapping[str, float], step: int) -> bool:
        """Report the intermediate value at ``step``; True: the pruner says stop now."""
        value = metrics.get(self.report_metric)
        if not self.can_prune or value is None or not math.isfinite(value):
            return False
        self.trial.report(float(value), step)
        self.reports += 1
        return bool(self.trial.should_prune())

    def finish(self, status: str, metrics: Mapping[str, Any]) -> None:
        """Leave the job's outcome on the trial (the sweeper reads it to tell the study)."""
        numbers = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        self.trial.set_user_attr("orch.status", status)
        self.trial.set_user_attr("orch.metrics", numbers)
