"""The Sweeper plugin ``hydra/sweeper=orch_optuna`` (a thin shim: the work is in ``_core.py``)."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class OrchOptunaSweeper(Sweeper):
    """Asynchronous Optuna sweeps over Hydra's override grammar (see ``_core.AsyncSweep``)."""

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = {
            k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in params.items()
        }
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.task_function: TaskFunction | None = None

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.task_function = task_function
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from hydra_plugins.orch_launcher._errors import compact_errors

        assert self.config is not None and self.launcher is not None
        with compact_errors():
            from hydra_plugins.orch_optuna_sweeper._core import AsyncSweep

            return AsyncSweep(self.params, self.config, self.launcher, self).run(arguments)
