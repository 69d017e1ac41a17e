"""Shared helpers of the training benchmarks (benchmarks/train_*.py): run a job, print a table."""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from sweeps.config import compose
from sweeps.train import main

REPO = Path(__file__).resolve().parent.parent


def run_job(overrides: Sequence[str]) -> dict[str, Any]:
    """Run one training job in this process, MLflow off, no checkpoint left behind."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(
            [
                "tracking.enabled=false",
                "checkpoint.resume=false",
                f"checkpoint.path={tmp}/ckpt.pt",
                "log_every_steps=100000",
                "num_threads=1",
                *overrides,
            ]
        )
        return main(cfg)


def run_torchrun(nproc: int, overrides: Sequence[str], timeout: float = 600) -> dict[str, Any]:
    """Run one job under ``torchrun --standalone``; return rank 0's result."""
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m", "sweeps.train",
            "tracking.enabled=false", "checkpoint.resume=false", f"checkpoint.path={tmp}/c.pt",
            f"hydra.run.dir={tmp}/hydra", "log_every_steps=100000", "num_threads=1", *overrides,
        ]  # fmt: skip
        env = os.environ | {"OMP_NUM_THREADS": "1"}
        done = subprocess.run(
            args, capture_output=True, text=True, env=env, timeout=timeout, check=False, cwd=REPO
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        line = [x for x in done.stdout.splitlines() if x.startswith("result: ")][-1]
        return dict(json.loads(line.removeprefix("result: ")))


def machine() -> str:
    """One line describing where the figures were measured."""
    return (
        f"{platform.node()} {os.cpu_count()} cores, torch {torch.__version__}, "
        f"load average {os.getloadavg()[0]:.2f} at start, 1 thread per rank"
    )


def table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (floats to 3 significant digits)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


class MlflowServer:
    """A real ``mlflow server`` on a SQLite store in ``root`` (a context manager; its URI)."""

    def __init__(self, root: Path, port: int = 0) -> None:
        self.root = root
        self.port = port or _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        mlflow = str(Path(sys.executable).with_name("mlflow"))
        self.proc = subprocess.Popen(
            [
                mlflow, "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                "--default-artifact-root", str(self.root / "artifacts"),
                "--host", "127.0.0.1", "--port", str(self.port),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return self.uri
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("mlflow server not healthy after 120 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own group, led by the server
            self.proc.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
