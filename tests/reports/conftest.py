"""A small real experiment, recorded once per test session (tests/reports/record_experiment.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow_server_session import running_mlflow_server
from record_experiment import Recorded

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    folder = tmp_path_factory.mktemp("recorded")
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "reports" / "record_experiment.py"), str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    uri = done.stdout.strip().splitlines()[-1]
    assert uri.startswith("sqlite:///"), done.stdout[-2000:]
    return Recorded(folder, uri)


@dataclass(frozen=True)
class MlflowServer:
    """A real ``mlflow server`` on loopback, on the recorded store."""

    url: str
    pid: int


@pytest.fixture(scope="session")
def mlflow_server(recorded: Recorded) -> Iterator[MlflowServer]:
    with running_mlflow_server(
        recorded.uri,
        recorded.folder / "artifacts",
        recorded.folder / "server.log",
        extra_args=("--workers", "1"),
        cwd=recorded.folder,
        healthy_within_s=180,
        stop_grace_s=20,
    ) as (url, pid):
        yield MlflowServer(url, pid)
