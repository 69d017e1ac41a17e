"""Learning-rate schedules: linear warm-up, then cosine, step or constant; linear scaling."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["learning_rate", "scaled_lr"]


def scaled_lr(lr: float, batch_size: int, base_batch_size: int | None) -> float:
    """Apply the linear scaling rule (Goyal et al. 2017): ``lr * batch_size / base_batch_size``.

    Args:
        lr: The learning rate tuned at ``base_batch_size``.
        batch_size: The global batch size of this run.
        base_batch_size: ``None`` to use ``lr`` as given.

    Returns:
        The peak learning rate.

    Example:
        >>> scaled_lr(0.1, 1024, 256)
        0.4
    """
    return lr if base_batch_size is None else lr * batch_size / base_batch_size


def learning_rate(
    cfg: Mapping[str, Any], peak: float, step: int, total_steps: int, steps_per_epoch: int
) -> float:
    """Learning rate at ``step`` (from 0) of ``total_steps``.

    Warm-up rises linearly from ``peak / warmup_steps`` to ``peak`` over ``warmup_epochs``; then
    ``cosine`` decays to ``min_lr_factor * peak`` at the last step, ``step`` multiplies by
    ``gamma`` at each milestone (a fraction of ``total_steps``), ``constant`` stays at the peak.

    Args:
        cfg: The ``schedule`` config node.
        peak: Peak learning rate (after the scaling rule).
        step: The step about to be taken.
        total_steps: Planned length of training.
        steps_per_epoch: Steps per epoch, to convert ``warmup_epochs``.

    Returns:
        The learning rate.
    """
    warmup = round(float(cfg["warmup_epochs"]) * steps_per_epoch)
    if step < warmup:
        return peak * (step + 1) / warmup
    name = cfg["name"]
    if name == "constant":
        return peak
    if name == "step":
        passed: int = sum(step >= m * total_steps for m in cfg["milestones"])
        return peak * float(cfg["gamma"]) ** passed
    span = max(1, total_steps - warmup - 1)
    progress = min(1.0, (step - warmup) / span)
    floor = float(cfg["min_lr_factor"]) * peak
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
