"""A trivial Hydra app for the launcher and sweeper benchmarks (no torch, no MLflow).

``+x``, ``+y``: the point (objective ``-((x-0.3)^2 + (y-0.6)^2)``, maximised); ``+base``: with
it, the trial sleeps ``base * (0.2 + 2.8 * r^2)`` s, ``r`` drawn from the point (uneven, and the
same for the same point under any sweeper), or ``base * 0.1 * 50^r`` s (log-uniform over 0.1 to
5 x base) with ``+spread=log``; ``+log``: a file each trial appends
``{"end", "value", "duration", "trial"}`` to (``trial``: the job index, ``$ORCH_TRIAL``).
"""

from __future__ import annotations

import json
import os
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
        if cfg.get("spread") == "log":
            duration = float(cfg.base) * 0.1 * 50**r
        else:
            duration = float(cfg.base) * (0.2 + 2.8 * r * r)
        time.sleep(duration)
    value = -((x - 0.3) ** 2 + (y - 0.6) ** 2)
    if cfg.get("log"):
        trial = int(os.environ.get("ORCH_TRIAL", "-1"))
        line = json.dumps(
            {"end": time.time(), "value": value, "duration": duration, "trial": trial}
        )
        with open(str(cfg.log), "a") as f:
            f.write(line + "\n")  # one write: lines of parallel trials never interleave
    return value


if __name__ == "__main__":
    main()
