"""A Hydra app that records the GPUs and node its trial was given, and when it ran.

Appends one JSON line to ``+log``: ``x``, ``CUDA_VISIBLE_DEVICES``, ``ORCH_GPUS``, the node's
name, start and end times; sleeps ``+sleep`` seconds between the two.
"""

from __future__ import annotations

import json
import os
import time

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> None:
    start = time.time()
    time.sleep(float(cfg.get("sleep", 0)))
    line = {
        "x": cfg.x,
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpus": os.environ.get("ORCH_GPUS"),
        "node": os.environ.get("ORCH_NODENAME"),
        "start": start,
        "end": time.time(),
    }
    with open(str(cfg.log), "a") as f:
        f.write(json.dumps(line) + "\n")  # one write: lines of parallel trials never interleave


if __name__ == "__main__":
    main()
