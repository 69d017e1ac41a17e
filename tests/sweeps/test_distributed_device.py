"""Issue 15: every rank of a job decides alike whether ``device=auto`` means GPUs.

A rank without a GPU (the job asked for fewer GPUs than it has ranks on a node) and one with
would pick gloo and nccl, and hang; the job-wide ``ORCH_GPUS_PER_NODE`` decides for all.
"""

from __future__ import annotations

import pytest
import torch

from sweeps.distributed import cuda_on_every_rank


@pytest.fixture
def visible_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.mark.usefixtures("visible_gpu")
@pytest.mark.parametrize(
    ("gpus_per_node", "size", "local_size", "expected"),
    [
        ("4", 4, 4, True),  # one GPU per rank
        ("8", 16, 8, True),
        ("1", 2, 2, False),  # two ranks would share one GPU (nccl refuses): gloo on CPUs
        ("0", 2, 2, False),  # the job asked for none
        ("0", 1, 1, True),  # one rank alone: its own devices decide
        (None, 2, 2, True),  # started by another tool (torchrun): as before
    ],
)
def test_the_job_wide_gpu_count_decides(
    monkeypatch: pytest.MonkeyPatch,
    gpus_per_node: str | None,
    size: int,
    local_size: int,
    expected: bool,
) -> None:
    if gpus_per_node is None:
        monkeypatch.delenv("ORCH_GPUS_PER_NODE", raising=False)
    else:
        monkeypatch.setenv("ORCH_GPUS_PER_NODE", gpus_per_node)
    assert cuda_on_every_rank(size, local_size) is expected


def test_no_visible_gpu_means_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("ORCH_GPUS_PER_NODE", "4")
    assert cuda_on_every_rank(4, 4) is False
