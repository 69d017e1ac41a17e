"""Models for the training job: MLP, CNN, a small ResNet, and the parameterised net NAS searches.

All convolutions are ``Conv2d`` with kernels clipped to the input: a 1-D signal arrives as
``(N, 1, 1, L)`` and gets ``(1, k)`` kernels, so K-FAC needs to know only Linear and Conv2d.
Activations are never in-place: K-FAC's hooks keep layer outputs for the sampled-Fisher backward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["build_model", "count_parameters"]


def _activation(name: str) -> nn.Module:
    kinds: dict[str, type[nn.Module]] = {
        "relu": nn.ReLU,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
        "tanh": nn.Tanh,
    }
    return kinds[name]()


def _kernel(k: int, h: int, w: int) -> tuple[int, int]:
    return (min(k, h) if h > 1 else 1, min(k, w) if w > 1 else 1)


def _stride(h: int, w: int) -> tuple[int, int]:
    # Halve only the dimensions that are still larger than one pixel.
    return (2 if h > 1 else 1, 2 if w > 1 else 1)


def _same_conv(
    c_in: int, c_out: int, k: tuple[int, int], stride: tuple[int, int] = (1, 1)
) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, stride=stride, padding=(k[0] // 2, k[1] // 2))


def _mlp(shape: tuple[int, int, int], classes: int, hidden: Sequence[int], act: str) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = shape[0] * shape[1] * shape[2]
    for h in hidden:
        layers += [nn.Linear(width, h), _activation(act)]
        width = h
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def _cnn(
    shape: tuple[int, int, int],
    classes: int,
    *,
    channels: Sequence[int],
    k: int,
    hidden: int,
    act: str,
) -> nn.Module:
    c, h, w = shape
    layers: list[nn.Module] = []
    for ch in channels:
        layers += [_same_conv(c, ch, _kernel(k, h, w)), _activation(act)]
        if h >= 2 or w >= 2:
            pool = (2 if h >= 2 else 1, 2 if w >= 2 else 1)
            layers.append(nn.MaxPool2d(pool))
            h, w = h // pool[0], w // pool[1]
        c = ch
    layers += [
        nn.Flatten(),
        nn.Linear(c * h * w, hidden),
        _activation(act),
        nn.Linear(hidden, classes),
    ]
    return nn.Sequential(*layers)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class _Block(nn.Module):
    """A ResNet basic block: two 3x3 convolutions and a shortcut (1x1 projection when needed)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        *,
        hw: tuple[int, int],
        stride: tuple[int, int],
        norm: str,
        act: str,
    ) -> None:
        super().__init__()
        k = _kernel(3, *hw)
        self.conv1 = _same_conv(c_in, c_out, k, stride)
        self.norm1 = _norm(norm, c_out)
        self.act1 = _activation(act)
        self.conv2 = _same_conv(c_out, c_out, k)
        self.norm2 = _norm(norm, c_out)
        self.act2 = _activation(act)
        self.shortcut: nn.Module = nn.Identity()
        if stride != (1, 1) or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _norm(norm, c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        result: torch.Tensor = self.act2(out + self.shortcut(x))
        return result


def _resnet(
    shape: tuple[int, int, int],
    classes: int,
    *,
    width: int,
    blocks: Sequence[int],
    norm: str,
    act: str,
) -> nn.Module:
    c, h, w = shape
    layers: list[nn.Module] = [
        _same_conv(c, width, _kernel(3, h, w)),
        _norm(norm, width),
        _activation(act),
    ]
    c_in = width
    for stage, n in enumerate(blocks):
        c_out = width * 2**stage
        for i in range(n):
            stride = _stride(h, w) if stage > 0 and i == 0 else (1, 1)
            layers.append(_Block(c_in, c_out, hw=(h, w), stride=stride, norm=norm, act=act))
            h, w = -(-h // stride[0]), -(-w // stride[1])
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, classes)]
    return nn.Sequential(*layers)


class ParamNet(nn.Module):
    """The network the NAS issue searches: depth, width, kernel sizes, skips, activation.

    ``kind="conv"``: a stem to ``width`` channels, ``depth`` same-size convolutions with the given
    kernel sizes, global average pooling and a linear head. ``kind="mlp"``: ``depth`` hidden Linear
    layers of ``width``. With ``skip``, each layer adds its input (the stem makes widths equal).

    Args:
        shape: Input ``(C, H, W)``.
        classes: Output classes.
        kind: ``"conv"`` or ``"mlp"``.
        depth: Number of hidden layers.
        width: Channels or units per hidden layer.
        kernel_sizes: One kernel size per layer, or one for all.
        skip: Residual connections.
        activation: ``relu``, ``gelu``, ``silu`` or ``tanh``.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        classes: int,
        *,
        kind: str,
        depth: int,
        width: int,
        kernel_sizes: int | Sequence[int],
        skip: bool,
        activation: str,
    ) -> None:
        super().__init__()
        c, h, w = shape
        ks = [kernel_sizes] * depth if isinstance(kernel_sizes, int) else list(kernel_sizes)
        self.kind = kind
        self.skip = skip
        if kind == "conv":
            self.stem: nn.Module = _same_conv(c, width, _kernel(3, h, w))
            self.layers = nn.ModuleList(_same_conv(width, width, _kernel(k, h, w)) for k in ks)
            self.pool: nn.Module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        else:
            self.stem = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, width))
            self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
            self.pool = nn.Identity()
        self.acts = nn.ModuleList(_activation(activation) for _ in range(depth + 1))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.acts[0](self.stem(x))
        for layer, act in zip(self.layers, self.acts[1:], strict=True):
            y = act(layer(x))
            x = x + y if self.skip else y
        logits: torch.Tensor = self.head(self.pool(x))
        return logits


def build_model(cfg: Mapping[str, Any], shape: tuple[int, int, int], classes: int) -> nn.Module:
    """Build the model a validated ``model`` config node names.

    Args:
        cfg: The ``model`` config node.
        shape: Input ``(C, H, W)``.
        classes: Number of classes.

    Returns:
        The model (parameters initialised from torch's global RNG: seed it first).
    """
    name = cfg["name"]
    if name == "mlp":
        return _mlp(shape, classes, cfg["hidden"], cfg["activation"])
    if name == "cnn":
        return _cnn(
            shape,
            classes,
            channels=cfg["channels"],
            k=cfg["kernel_size"],
            hidden=cfg["hidden"],
            act=cfg["activation"],
        )
    if name == "resnet":
        return _resnet(
            shape,
            classes,
            width=cfg["width"],
            blocks=cfg["blocks"],
            norm=cfg["norm"],
            act=cfg["activation"],
        )
    if name == "param":
        return ParamNet(
            shape,
            classes,
            kind=cfg["kind"],
            depth=cfg["depth"],
            width=cfg["width"],
            kernel_sizes=cfg["kernel_sizes"],
            skip=cfg["skip"],
            activation=cfg["activation"],
        )
    raise ValueError(f"unknown model {name!r}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
