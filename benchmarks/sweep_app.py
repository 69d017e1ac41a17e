"""A trivial Hydra app for the launcher and sweeper benchmarks (no torch, no MLflow).

``+x``, ``+y``: the point (objective ``-((x-0.3)^2 + (y-0.6)^2)``, maximised); ``+base``: with
it, the trial sleeps ``base * (0.2 + 2.8 * r^2)`` s, ``r`` drawn from the point (uneven, and the
same for the same point under any sweeper); ``+log``: a file each trial appends
``{"end", "value", "duration"}`` to.
"""

from __future__ import annotations

import json
import random
import time

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> float:
    x, y = float(cfg.get("x", 0.0)), float(cfg.get("y", 0.0))
    duration = 0.0
    if cfg.get("base") is not None:
        r = random.Random(f"{x:.12f},{y:.12f}").random()
        duration = float(cfg.base) * (0.2 + 2.8 * r * r)
        time.sleep(duration)
    value = -((x - 0.3) ** 2 + (y - 0.6) ** 2)
    if cfg.get("log"):
        line = json.dumps({"end": time.time(), "value": value, "duration": duration})
        with open(str(cfg.log), "a") as f:
            f.write(line + "\n")  # one write: lines of parallel trials never interleave
    return value


if __name__ == "__main__":
    main()
