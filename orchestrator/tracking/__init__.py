"""MLflow helpers for training jobs: batched logging, flattened configs, run tags, resume.

Nothing here imports torch: the training job (``sweeps/``) uses these helpers, and so may the
reports. Every write goes through ``MlflowClient.log_batch`` so a training step never pays one
HTTP round trip per metric (see ``../shared/STACK.md``: 1,000 ``log_metric`` calls cost 60 s
against a server, one batch of 1,000 metrics 0.23 s).
"""

from __future__ import annotations

from orchestrator.tracking._mlflow import (
    ENV_TAGS,
    BatchedLogger,
    TrackingError,
    check_tracking_uri,
    connect,
    default_tracking_uri,
    env_tags,
    flatten_params,
    start_or_resume_run,
)

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
