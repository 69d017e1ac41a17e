"""A Hydra app that reports how its trial process was started (fork server tests).

Appends one JSON line to ``+log`` with its pid, parent pid, job id, working folder, a NumPy
draw and the mode of the fork server's socket folder; ``+sleep`` seconds of sleep after that;
``+record_term``: on SIGTERM write ``term <pid> <signal>`` to the log and exit 0, except the trial
whose ``x`` equals ``+ignore_term_x``, which ignores SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time

import hydra
import numpy as np
from omegaconf import DictConfig


def _append(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")  # one write: lines of parallel trials never interleave


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg: DictConfig) -> int:
    server = os.environ.get("ORCH_FORKSERVER")
    mode = stat.S_IMODE(os.stat(os.path.dirname(server)).st_mode) if server else None
    if cfg.get("ignore_term_x") is not None and int(cfg.ignore_term_x) == int(cfg.x):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif cfg.get("record_term"):

        def record(signum: int, _frame: object) -> None:
            _append(str(cfg.log), f"term {os.getpid()} {signum}")
            sys.exit(0)

        signal.signal(signal.SIGTERM, record)
    doc = {
        "x": int(cfg.x),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "job_id": os.environ.get("ORCH_JOB_ID"),
        "cwd": os.getcwd(),
        "draw": float(np.random.rand()),  # noqa: NPY002 - the global generator, on purpose
        "socket_dir_mode": mode,
    }
    _append(str(cfg.log), json.dumps(doc))
    print(f"trial {cfg.x} says hello")
    time.sleep(float(cfg.get("sleep", 0.0)))
    return int(cfg.x)


if __name__ == "__main__":
    main()
