"""The training job: ``python -m sweeps.train [group=option] [key=value ...]`` (a Hydra app).

:func:`main` runs one job from a composed config and returns a result dict, so a launcher or a
sweeper can call it as a plain function; the Hydra entry point (:func:`cli`) returns the final
validation accuracy (what the Optuna sweeper maximises) and exits with :data:`EXIT_BAD_CONFIG`
or :data:`EXIT_PREEMPTED` when the job could not run or was stopped to be resumed.

Where to look next: ``sweeps/config.py`` for the config's schema and checks (every field
documented), ``sweeps/trainer.py`` for the training loop (:class:`~sweeps.trainer.Trainer`: one
step, evaluation, checkpoints, MLflow logging, pruning), ``conf/`` for the values.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from orchestrator.tracking import TrackingError, check_tracking_uri
from sweeps.config import ConfigError, fingerprint, parse, to_dict
from sweeps.distributed import init_distributed, shutdown
from sweeps.trainer import Trainer

__all__ = ["EXIT_BAD_CONFIG", "EXIT_PREEMPTED", "cli", "fingerprint", "main"]

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
        TrackingError: The tracking URI is not local, or a resumed run is not in the store.
    """
    config = parse(cfg)
    if config.tracking.enabled and config.tracking.uri:
        check_tracking_uri(config.tracking.uri)  # every rank, before any rank starts work
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
        try:
            result = main(cfg)
        except (ConfigError, TrackingError) as e:
            # A user's mistake: the message names the field and the fix; a traceback adds noise.
            print(f"error: {e}", file=sys.stderr)
            sys.exit(EXIT_BAD_CONFIG)
        if result["status"] == "preempted":
            sys.exit(EXIT_PREEMPTED)
        return float(result["val_accuracy"])

    _app()


if __name__ == "__main__":
    cli()
