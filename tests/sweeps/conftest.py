"""Fixtures of the training-job tests: one thread per process, a real MLflow server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from mlflow_server_session import running_mlflow_server

# Two shared cores: with two OpenMP threads, a kernel waits at a barrier for a core that another
# process holds (im2col was seen going from 1 s to 96 s). One thread keeps timings sane.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on a SQLite store, once per test session; yields its URI."""
    root = tmp_path_factory.mktemp("mlflow-server")
    # About 17 s to become healthy the first time on this machine.
    with running_mlflow_server(
        f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", root / "server.log"
    ) as (uri, _):
        yield uri
