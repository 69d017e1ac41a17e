"""The training job: ``python -m sweeps.train [group=option] [key=value ...]`` (a Hydra app).

:func:`main` runs one job from a composed config and returns a result dict, so a launcher or a
sweeper can call it as a plain function; the Hydra entry point (:func:`cli`) returns the final
validation accuracy (what the Optuna sweeper maximises) and exits with :data:`EXIT_BAD_CONFIG`
or :data:`EXIT_PREEMPTED` when the job could not run or was stopped to be resumed.

MLflow, by its own conventions (``orchestrator/tracking``): ``tracking.uri`` /
``tracking.experiment`` when set, else ``MLFLOW_TRACKING_URI`` / ``MLFLOW_EXPERIMENT_NAME``, else
``./mlflow.db`` and ``train``; any tracking server, with MLflow's credential variables. A job of a
multirun without ``run_name`` is named by its trial's overrides, and a finished job prints the
MLflow UI link of its run (``mlflow: URL``) when it logged to a server.

Where to look next: ``sweeps/config.py`` for the config's schema and checks (every field
documented), ``sweeps/trainer.py`` for the training loop (:class:`~sweeps.trainer.Trainer`: one
step, evaluation, checkpoints, MLflow logging, pruning), ``conf/`` for the values.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, open_dict, read_write

from orchestrator.tracking import (
    TrackingError,
    check_tracking_uri,
    default_tracking_uri,
    experiment_url,
    trial_run_name,
)
from sweeps.config import ConfigError, fingerprint, parse, to_dict
from sweeps.distributed import init_distributed, shutdown
from sweeps.trainer import Trainer

__all__ = [
    "EXIT_BAD_CONFIG",
    "EXIT_PREEMPTED",
    "cli",
    "fingerprint",
    "main",
    "name_trial",
    "print_run_link",
]

#: Exit status of a job that saved a checkpoint on SIGTERM / SIGUSR1 (resubmit it to resume).
EXIT_PREEMPTED = 3
#: Exit status of a job refused for a bad config value (the message names the field).
EXIT_BAD_CONFIG = 2


def main(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Run one training job.

    Args:
        cfg: The composed config (``sweeps.config.compose(...)`` or Hydra's).

    Returns:
        ``status`` (``"completed"``, ``"preempted"``, ``"pruned"``: an Optuna trial the
        study's pruner stopped, see ``sweeps/trial_link.py``, or ``"diverged"``: the loss
        became non-finite, the job stopped early), ``val_accuracy``, ``val_loss``,
        ``best_val_accuracy``, ``train_loss``, ``train_accuracy``, ``steps``, ``epochs``,
        ``reached_target``, ``steps_to_target``, ``epochs_to_target``, ``time_to_target_s``
        (training time, evaluation excluded), ``train_time_s``, ``samples_per_sec``,
        ``peak_memory_mb`` (rank 0's peak RSS on CPU, allocated memory on GPU),
        ``peak_memory_mb_per_rank``, ``log_time_s``, ``log_batch_calls``, ``run_id``,
        ``checkpoint``, ``world_size``; on rank 0 of a job that was not preempted also
        ``n_params`` and ``latency_ms`` (the model's cost, ``sweeps/nas.py``).

    Raises:
        ConfigError: A config value (or a distributed environment variable) is invalid.
        TrackingError: The tracking URI (``tracking.uri`` or ``MLFLOW_TRACKING_URI``) is
            malformed, the server refuses the credentials, or a resumed run is not in the store.
    """
    config = parse(cfg)
    if config.tracking.enabled:  # every rank, before any rank starts work
        if config.tracking.uri:
            check_tracking_uri(config.tracking.uri)
        else:
            default_tracking_uri()  # MLFLOW_TRACKING_URI, checked, when it is set
    world = init_distributed(config.device)
    trainer: Trainer | None = None
    try:
        trainer = Trainer(config, to_dict(cfg), world)
        return trainer.run()
    except BaseException:
        # A crash (not a preemption: that returns) marks the MLflow run FAILED, not RUNNING
        # forever; the original error is what propagates.
        if trainer is not None:
            trainer.abandon()
        raise
    finally:
        shutdown()


def cli() -> None:
    """Console entry point: the Hydra app (``python -m sweeps.train``)."""
    import hydra

    from sweeps.config import CONF_DIR

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def _app(cfg: DictConfig) -> float:
        name_trial(cfg)
        try:
            result = main(cfg)
        except (ConfigError, TrackingError) as e:
            # A user's mistake: the message names the field and the fix; a traceback adds noise.
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_BAD_CONFIG)
        if result.get("run_id"):
            print_run_link(cfg, str(result["run_id"]))
        if result["status"] == "preempted":
            sys.exit(EXIT_PREEMPTED)
        return float(result["val_accuracy"])

    _app()


def name_trial(cfg: DictConfig) -> None:
    """Name a multirun job's MLflow run by its trial's overrides, unless ``run_name`` is set.

    Every job of a sweep (basic, ``orch`` or Optuna) runs this task function under Hydra with
    its own overrides in ``hydra.overrides.task``: ``nodes=2,optimizer=kfac,...``
    (:func:`~orchestrator.tracking.trial_run_name`), so runs of different trials never share a
    name. A single run keeps the default name.

    Args:
        cfg: The job's config (Hydra's); ``run_name`` is set in it.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if cfg.get("run_name") or not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    name = trial_run_name([str(o) for o in hydra_cfg.overrides.task])
    if name:
        with read_write(cfg), open_dict(cfg):
            cfg.run_name = name


def print_run_link(cfg: DictConfig | Mapping[str, Any], run_id: str) -> None:
    """Print ``mlflow: URL``, the MLflow UI's page of the run in its model-training view, when
    the job logged to a tracking server (MLflow's own "View run" link opens the GenAI view)."""
    tracking = cfg.get("tracking") or {}
    uri = tracking.get("uri") or default_tracking_uri()
    if experiment_url(uri, "0") is None:
        return
    try:
        experiment_id = MlflowClient(uri).get_run(run_id).info.experiment_id
    except MlflowException:
        return  # a link is a courtesy: the run is logged already
    print(f"mlflow: {experiment_url(uri, experiment_id, run_id)}", flush=True)


if __name__ == "__main__":
    cli()
