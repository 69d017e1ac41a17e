"""Compose each job's config once, not twice.

Hydra's sweepers check a batch before launching it (``Sweeper.validate_batch_is_legal``): they
compose every job's config and throw it away, because a launcher may compose it again in
another process or on another machine. Ours composes in the sweep's own process, right after:
it keeps what the check composed and takes it instead of composing again. Composition is the
launcher's largest cost per trial (about 40 ms for a small app; Hydra re-reads its own YAML
files each time), so this halves the launcher's work per trial.

Only compositions made by Hydra's own ``validate_batch_is_legal`` are kept (a caller that might
change its result is never handed to a job), at most ``limit`` at a time; a job whose
composition was not kept is composed as before.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig

__all__ = ["ComposedOnce"]

_VALIDATE_CODE = Sweeper.validate_batch_is_legal.__code__


class ComposedOnce:
    """A config loader's ``load_sweep_config``, remembering what the batch check composed.

    Args:
        loader: The Hydra context's config loader (shared with the sweeper).
        limit: Most compositions kept at once (each is a whole job config).
    """

    def __init__(self, loader: Any, limit: int = 256) -> None:
        self._compose = loader.load_sweep_config
        self._kept: dict[tuple[int, tuple[str, ...]], tuple[DictConfig, DictConfig]] = {}
        self._limit = limit

    @classmethod
    def install(cls, loader: Any, limit: int = 256) -> ComposedOnce:
        """Wrap ``loader`` (once: a second launcher on the same loader shares the first's)."""
        installed = getattr(loader, "_orch_composed_once", None)
        if isinstance(installed, cls):
            return installed
        memo = cls(loader, limit)
        try:
            # An attribute of this loader instance: the sweeper calls it through the same
            # object; the class and any other loader are untouched.
            loader.load_sweep_config = memo._composing
            loader._orch_composed_once = memo
        except AttributeError:  # a loader that takes no attributes: compose twice, as before
            pass
        return memo

    def _composing(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        config: DictConfig = self._compose(master_config, sweep_overrides)
        if sys._getframe(1).f_code is _VALIDATE_CODE and len(self._kept) < self._limit:
            self._kept[(id(master_config), tuple(sweep_overrides))] = (master_config, config)
        return config

    def take(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        """The job's config: the batch check's composition if kept, else a new one."""
        kept = self._kept.pop((id(master_config), tuple(sweep_overrides)), None)
        if kept is not None and kept[0] is master_config:
            return kept[1]
        result: DictConfig = self._compose(master_config, sweep_overrides)
        return result

    def __len__(self) -> int:
        return len(self._kept)
