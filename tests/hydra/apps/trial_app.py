"""A user's own Hydra app under the public trial API (``orchestrator.trial``), not sweeps.train.

A learning curve ``slope * step`` for ``+steps`` steps: each step is reported, and the loop
stops when the sweep's pruner says so. ``+raise_pruned=true`` stops with Optuna's idiom
(``raise optuna.TrialPruned()``) instead of returning. The trial's sampled parameters must equal
the composed config's values (``trial.params`` is checked against ``cfg``).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from orchestrator import trial


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> float:
    for name, value in trial.params.items():
        assert cfg[name] == value, (name, cfg[name], value)
    value = 0.0
    for step in range(1, int(cfg.get("steps", 8)) + 1):
        value = float(cfg.slope) * step
        trial.report(value, step)
        if trial.should_prune():
            if cfg.get("raise_pruned"):
                import optuna

                raise optuna.TrialPruned(f"pruned at step {step}")
            break
    return value


if __name__ == "__main__":
    main()
