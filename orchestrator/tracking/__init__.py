"""MLflow helpers for training jobs: batched logging, flattened configs, run tags, resume.

They follow MLflow's own conventions: ``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_NAME``
decide where runs go when the config names nothing (:func:`default_tracking_uri`,
:func:`default_experiment_name`), any tracking server works with MLflow's credential variables
(:func:`connect`), a sweep's runs are named by their trial's values (:func:`trial_run_name`),
and experiments are marked as model training for the MLflow UI (:func:`mark_model_training`,
:func:`experiment_url`).

Nothing here imports torch: the training job (``sweeps/``) uses these helpers, and so may the
reports. Every write goes through ``MlflowClient.log_batch`` so a training step never pays one
HTTP round trip per metric (see ``../shared/STACK.md``: 1,000 ``log_metric`` calls cost 60 s
against a server, one batch of 1,000 metrics 0.23 s).
"""

from __future__ import annotations

from orchestrator.tracking._mlflow import (
    DEFAULT_EXPERIMENT,
    ENV_TAGS,
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    BatchedLogger,
    TrackingError,
    check_tracking_uri,
    connect,
    default_experiment_name,
    default_tracking_uri,
    env_tags,
    experiment_url,
    flatten_params,
    mark_model_training,
    start_or_resume_run,
    trial_run_name,
)

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
