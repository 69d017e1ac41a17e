"""The Launcher plugin ``hydra/launcher=orch`` (a thin shim: the work is in ``_core.py``).

Hydra imports this module in every app at start-up, before it knows which launcher is wanted;
the scheduler, store and MLflow are therefore imported only inside :meth:`OrchLauncher.launch`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, read_write
from omegaconf.errors import InterpolationKeyError, OmegaConfBaseException

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

        # The scheduler's store migrates with alembic, whose plugin registry logs seven "setup
        # plugin ..." INFO lines when first imported, here under Hydra's console logging.
        # Only this process (the sweep's) is concerned; the daemon's own log is untouched.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        if _UNRESOLVED:
            from hydra_plugins.orch_launcher._errors import OrchSweepError

            problems = "; ".join(_UNRESOLVED)
            _UNRESOLVED.clear()
            raise OrchSweepError(
                f"{problems}. A launcher field may name a key swept per job as ${{key}} "
                "(+nodes=1,2 'hydra.launcher.nodes=${nodes}'), or give a default: "
                "${oc.select:key,1}"
            )
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


_UNRESOLVED: list[str] = []
"""Launcher fields :class:`LauncherFieldsCheck` could not resolve (Hydra swallows a callback's
exception, so :meth:`OrchLauncher.setup` raises for them)."""

_SIMPLE_KEY = re.compile(r"\$\{([A-Za-z_][\w.]*)\}")


class LauncherFieldsCheck(Callback):
    """Resolves ``hydra.launcher`` before Hydra builds the launcher (``on_multirun_start``).

    Hydra resolves the launcher's config once, in the sweep's primary config, where a key swept
    per job (``+nodes=1,2``) does not exist yet; each job's own config has it, and the launcher
    reads a job's resources from that. So ``hydra.launcher.nodes=${nodes}`` is given a default
    at the sweep's level (``${oc.select:nodes,1}``: the field's default), and every job keeps
    its own value. Any other field that cannot be resolved is set to its default here (so Hydra
    can build the launcher) and noted: the launcher's :meth:`~OrchLauncher.setup` then fails
    with a message naming it, not a stack of Hydra's frames.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra_plugins.orch_launcher.config import OrchLauncherConf

        launcher = config.hydra.launcher
        if not str(launcher.get("_target_", "")).endswith(".OrchLauncher"):
            return
        defaults = {f.name: f.default for f in dataclasses.fields(OrchLauncherConf)}
        default_nodes = OmegaConf.structured(OrchLauncherConf)
        for key in list(launcher.keys()):
            name = str(key)
            try:
                value = launcher[name]
                if OmegaConf.is_config(value):
                    OmegaConf.to_container(value, resolve=True)
                continue
            except OmegaConfBaseException as e:
                error = e
            raw = launcher._get_node(name)._value()
            match = _SIMPLE_KEY.fullmatch(str(raw))
            default = defaults.get(name, dataclasses.MISSING)
            if (
                isinstance(error, InterpolationKeyError)
                and match is not None
                and (default is None or isinstance(default, int | float | str | bool))
            ):
                shown = "null" if default is None else str(default)
                with read_write(launcher):
                    launcher[name] = f"${{oc.select:{match.group(1)},{shown}}}"
                log.debug("hydra.launcher.%s=%s: each job's own value", name, raw)
                continue
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            _UNRESOLVED.append(f"hydra.launcher.{name}={raw} cannot be resolved ({reason})")
            with read_write(launcher):
                launcher[name] = default_nodes[name]
