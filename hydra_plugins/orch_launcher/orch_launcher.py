"""The Launcher plugin ``hydra/launcher=orch`` (a thin shim: the work is in ``_core.py``).

Hydra imports this module in every app at start-up, before it knows which launcher is wanted;
the scheduler, store and MLflow are therefore imported only inside :meth:`OrchLauncher.launch`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from hydra_plugins.orch_launcher._core import OrchSweep, PendingJob

log = logging.getLogger(__name__)


class OrchLauncher(Launcher):
    """Runs each job of a multirun as a job of the orchestrator's scheduler.

    Besides Hydra's synchronous :meth:`launch`, it offers :meth:`submit` and :meth:`wait_any`,
    which the asynchronous sweeper (``hydra/sweeper=orch_optuna``) uses to refill a slot the
    moment a job ends.
    """

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = {
            k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in params.items()
        }
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self._sweep: OrchSweep | None = None

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        from hydra_plugins.orch_launcher._compose_once import ComposedOnce

        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        # Before the sweeper checks its first batch: keep what that check composes.
        ComposedOnce.install(hydra_context.config_loader)

    def sweep(self) -> OrchSweep:
        """The sweep's scheduler session, made on first use (one per launcher)."""
        if self._sweep is None:
            from hydra_plugins.orch_launcher._core import OrchSweep

            assert self.config is not None and self.hydra_context is not None
            assert self.task_function is not None
            self._sweep = OrchSweep(
                self.params, self.config, self.hydra_context, self.task_function
            )
        return self._sweep

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        """Submit every job, wait for all of them (unless ``detach``), return their records."""
        from hydra_plugins.orch_launcher._errors import compact_errors

        with compact_errors():
            return self.sweep().launch(job_overrides, initial_job_idx)

    def submit(
        self, overrides: Sequence[str], job_idx: int, env: Mapping[str, str] | None = None
    ) -> PendingJob:
        """Submit one job and return at once (for asynchronous sweepers)."""
        return self.sweep().submit([(list(overrides), job_idx, dict(env or {}))])[0]

    def prepare(
        self, overrides: Sequence[str], job_idx: int, env: Mapping[str, str] | None = None
    ) -> Any:
        """Compose one job without submitting it (submit later with :meth:`submit_prepared`)."""
        return self.sweep().prepare([(list(overrides), job_idx, dict(env or {}))])

    def submit_prepared(self, prepared: Any) -> PendingJob:
        """Submit what :meth:`prepare` returned; returns at once."""
        return self.sweep().submit_prepared(prepared)[0]

    def wait_any(
        self, pending: Sequence[PendingJob], timeout_s: float | None = None
    ) -> list[tuple[PendingJob, JobReturn]]:
        """Wait until at least one of ``pending`` has ended (or the timeout); their records."""
        return self.sweep().wait_any(pending, timeout_s)
