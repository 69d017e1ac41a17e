"""A tiny two-objective Hydra app (``[accuracy, cost]`` of ``x``) for Pareto-front tests."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> list[float]:
    x = float(cfg.x)
    return [x, x * x + 0.1 * abs(x - 0.5)]


if __name__ == "__main__":
    main()
