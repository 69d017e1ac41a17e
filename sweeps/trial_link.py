"""The training job's link to its Optuna trial: now the public API :mod:`orchestrator.trial`.

Any app (``sweeps.train`` included, see ``sweeps/trainer.py``) reports, prunes and reads its
parameters through ``from orchestrator import trial``. This module keeps the names older code
imports from here: the storage and pruner helpers, and :class:`TrialLink` with its former
``report`` (report, then ask the pruner) and ``finish`` (status and final metrics).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator import trial as _trial
from orchestrator.trial import (
    ENV_PARAMS,
    ENV_STORAGE,
    ENV_STUDY,
    ENV_TRIAL_ID,
    PRUNERS,
    SweepConfigError,
    make_pruner,
    open_storage,
)

__all__ = [
    "ENV_PARAMS",
    "ENV_STORAGE",
    "ENV_STUDY",
    "ENV_TRIAL_ID",
    "PRUNERS",
    "SweepConfigError",
    "TrialLink",
    "make_pruner",
    "open_storage",
]


class TrialLink(_trial.TrialLink):
    """:class:`orchestrator.trial.TrialLink` with its former methods."""

    def report(self, metrics: Mapping[str, float], step: int) -> bool:
        """Report the intermediate value at ``step``; True: the pruner says stop now."""
        return self.put(metrics, step) and self.should_prune()

    def finish(self, status: str, metrics: Mapping[str, Any]) -> None:
        """Leave the job's outcome on the trial (the sweeper reads it to tell the study)."""
        self.set_metrics(metrics)
        self.trial.set_user_attr("orch.status", status)
