"""Architecture cost for the NAS objectives: parameters, and inference latency on this CPU.

The search space itself is the ``param`` model's config (``conf/model/param.yaml``: depth,
width, kernel sizes, skip connections, activation) sampled by the sweeper
(``conf/experiment/nas.yaml``); this module measures what an architecture costs, so a trial can
report accuracy against size and speed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn

from sweeps.models import count_parameters

__all__ = ["latency_ms", "model_cost", "pareto_front"]


def latency_ms(
    model: nn.Module,
    sample_shape: Sequence[int],
    *,
    batch: int = 1,
    warmup: int = 5,
    repeats: int = 30,
) -> float:
    """Median wall time of one forward pass in ms (inference mode, one thread).

    One thread and the median: on a shared machine the mean follows whatever else runs, the
    median much less; one thread makes architectures comparable whatever the run's thread
    count was.

    Args:
        model: The network (moved to the CPU for the measurement, then back).
        sample_shape: One input's shape, without the batch dimension.
        batch: Batch size of the timed forward (1: the latency a single query sees).
        warmup: Untimed passes first (allocator and kernel selection).
        repeats: Timed passes.
    """
    device = next(model.parameters()).device
    was_training = model.training
    threads = torch.get_num_threads()
    model.eval().cpu()
    torch.set_num_threads(1)
    x = torch.randn(batch, *sample_shape)
    times = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
        model.to(device)
        model.train(was_training)
    return 1000 * statistics.median(times)


def model_cost(model: nn.Module, sample_shape: Sequence[int]) -> dict[str, float]:
    """``n_params`` (trainable) and ``latency_ms`` (see :func:`latency_ms`)."""
    return {
        "n_params": float(count_parameters(model)),
        "latency_ms": latency_ms(model, sample_shape),
    }


def pareto_front(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[int]:
    """Indices of the points no other point dominates.

    >>> pareto_front([(0.9, 10), (0.8, 5), (0.7, 20)], maximize=[True, False])
    [0, 1]
    """
    sign = [1.0 if m else -1.0 for m in maximize]
    scored = [[s * v for s, v in zip(sign, p, strict=True)] for p in points]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and a != b

    return [
        i
        for i, p in enumerate(scored)
        if not any(dominates(q, p) for j, q in enumerate(scored) if j != i)
    ]
