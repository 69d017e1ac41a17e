"""The sweep's MLflow parent run (the layout is in ``docs/sweeps.md``).

One parent run per sweep, made before the first trial starts: run name
``sweep-<experiment>-<sweep id>``, tags ``orch.role=sweep``, ``orch.sweep_id``, ``orch.study``,
``orch.experiment``. Each trial's own run (opened by the training job) nests under it through
``ORCH_PARENT_RUN_ID`` in the job's environment. When the sweep ends, its counts and best value
are logged on the parent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["ParentRun"]


@dataclass
class ParentRun:
    """An open parent run."""

    client: Any
    run_id: str
    uri: str
    experiment: str

    @classmethod
    def open(
        cls,
        config: DictConfig,
        sweep_id: str,
        study: str,
        cwd: str,
        run_id: str | None = None,
    ) -> ParentRun | None:
        """Open (or, with ``run_id``, reopen) the parent run of a sweep of ``config``'s app.

        Returns:
            None when the app has no ``tracking`` node, or tracking is off: nothing to nest.
        """
        tracking = OmegaConf.select(config, "tracking", default=None)
        if tracking is None or not OmegaConf.select(tracking, "enabled", default=False):
            return None
        from orchestrator.tracking import (
            connect,
            default_experiment_name,
            default_tracking_uri,
            start_or_resume_run,
        )

        uri = str(tracking.get("uri") or default_tracking_uri(cwd))
        experiment = str(tracking.get("experiment") or default_experiment_name())
        client = connect(uri)
        tags = {
            "orch.role": "sweep",
            "orch.sweep_id": sweep_id,
            "orch.study": study,
            "orch.experiment": experiment,
        }
        rid = start_or_resume_run(
            client, experiment, f"sweep-{experiment}-{sweep_id}", tags, run_id
        )
        return cls(client, rid, uri, experiment)

    def summarise(
        self, metrics: Mapping[str, float], params: Mapping[str, str] | None = None
    ) -> None:
        """Log the sweep's summary and mark the run finished (a later call updates it)."""
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)) for k, v in (params or {}).items()],
        )
        self.client.set_terminated(self.run_id, "FINISHED")
