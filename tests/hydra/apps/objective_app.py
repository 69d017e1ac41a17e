"""A tiny Hydra app for sweeper tests: a smooth objective of ``x``; fails above ``fail_above``."""

from __future__ import annotations

import time

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> float:
    x = float(cfg.x)
    if cfg.get("fail_above") is not None and x > float(cfg.fail_above):
        raise ValueError(f"x={x} above fail_above={cfg.fail_above}")
    time.sleep(float(cfg.get("sleep", 0.0)))
    return -((x - 0.3) ** 2)


if __name__ == "__main__":
    main()
