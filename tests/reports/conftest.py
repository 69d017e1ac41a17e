"""A small real experiment, recorded once per test session (tests/reports/record_experiment.py)
into the session's MLflow store, which the session's ``mlflow_server`` serves (both fixtures in
tests/mlflow_server_session.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.reports.record_experiment import Recorded

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def recorded(mlflow_store: Path) -> Recorded:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "reports" / "record_experiment.py"),
            str(mlflow_store),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    uri = done.stdout.strip().splitlines()[-1]
    assert uri.startswith("sqlite:///"), done.stdout[-2000:]
    return Recorded(mlflow_store, uri)
