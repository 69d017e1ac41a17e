"""What a model costs: parameters, FLOPs per sample and the layer shapes K-FAC works on.

A model is described by its Linear and Conv2d layers only (what K-FAC preconditions and what
dominates compute); everything else (normalisation, biases of other layers) is counted in
``extra_params``. Presets: the models of ``conf/model`` on the datasets of ``conf/data``
(generated from the real torch modules by ``tests/reports/model_presets_gen.py`` into
``_conf_models.py``, and checked against them by a test) and ResNet-50 on 224x224 ImageNet,
built here from its published shape (He et al. 2016, the v1.5 variant with the stride on the
3x3 convolution).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.perfmodel._conf_models import CONF_MODELS

__all__ = ["MODELS", "LayerShape", "ModelSpec", "get_model", "resnet50"]


@dataclass(frozen=True)
class LayerShape:
    """A Linear (``positions == 1``) or Conv2d layer.

    Args:
        name: The module's name.
        fan_in: Inputs per output: ``in_features``, or ``in_channels * kh * kw`` for a conv.
        fan_out: ``out_features`` or ``out_channels``.
        positions: Output positions per sample (``h_out * w_out``; 1 for Linear).
        bias: Whether the layer has a bias (K-FAC's input factor then has one more row).
    """

    name: str
    fan_in: int
    fan_out: int
    positions: int = 1
    bias: bool = True

    @property
    def params(self) -> int:
        return self.fan_out * (self.fan_in + int(self.bias))

    @property
    def dim_a(self) -> int:
        """Side of K-FAC's input factor ``A``."""
        return self.fan_in + int(self.bias)

    @property
    def dim_g(self) -> int:
        """Side of K-FAC's output-gradient factor ``G``."""
        return self.fan_out

    @property
    def forward_flops(self) -> float:
        """Multiply-adds of one sample's forward pass, counted as 2 FLOPs each."""
        return 2.0 * self.fan_in * self.fan_out * self.positions


@dataclass(frozen=True)
class ModelSpec:
    """A model's costs.

    Args:
        name: Preset name, e.g. ``mlp-mnist5k`` or ``resnet50``.
        layers: Its Linear and Conv2d layers.
        extra_params: Parameters outside those layers (normalisation layers).
        description: One line for tables.
    """

    name: str
    layers: tuple[LayerShape, ...]
    extra_params: int = 0
    description: str = ""
    _cache: dict[str, float] = field(default_factory=dict, compare=False, repr=False)

    @property
    def params(self) -> int:
        return sum(lay.params for lay in self.layers) + self.extra_params

    @property
    def gradient_bytes(self) -> float:
        """Bytes of one float32 gradient all-reduce."""
        return 4.0 * self.params

    @property
    def forward_flops(self) -> float:
        return sum(lay.forward_flops for lay in self.layers)

    @property
    def train_flops(self) -> float:
        """Forward plus backward (two forward-sized products: input and weight gradients)."""
        return 3.0 * self.forward_flops

    @property
    def factor_dims(self) -> tuple[int, ...]:
        """Sides of every K-FAC factor, ``A`` then ``G`` per layer."""
        return tuple(d for lay in self.layers for d in (lay.dim_a, lay.dim_g))

    @property
    def factor_bytes(self) -> float:
        """Bytes of all factors in float32: the K-FAC factor all-reduce, and the inverses."""
        return 4.0 * sum(d * d for d in self.factor_dims)

    @property
    def curvature_flops(self) -> float:
        """FLOPs per sample to accumulate the factors: an outer product per position."""
        return sum(2.0 * lay.positions * (lay.dim_a**2 + lay.dim_g**2) for lay in self.layers)

    @property
    def precondition_flops(self) -> float:
        """FLOPs per step of ``G^-1 V A^-1`` over all layers (two matrix products each)."""
        return sum(
            2.0 * (lay.dim_g**2 * lay.dim_a + lay.dim_g * lay.dim_a**2) for lay in self.layers
        )

    @property
    def inverse_units(self) -> float:
        """Sum of ``d^3`` over the factors: an inverse's cost in units of ``d^3``."""
        return float(sum(d**3 for d in self.factor_dims))


def _bottleneck_stage(
    prefix: str, c_in: int, width: int, blocks: int, size_in: int, stride: int
) -> tuple[list[LayerShape], int, int]:
    layers: list[LayerShape] = []
    size = size_in // stride
    out = 4 * width
    for b in range(blocks):
        s_in = size_in if b == 0 else size
        layers += [
            LayerShape(f"{prefix}.{b}.conv1", c_in, width, s_in * s_in, bias=False),
            LayerShape(f"{prefix}.{b}.conv2", 9 * width, width, size * size, bias=False),
            LayerShape(f"{prefix}.{b}.conv3", width, out, size * size, bias=False),
        ]
        if b == 0:
            layers.append(LayerShape(f"{prefix}.0.downsample", c_in, out, size * size, False))
        c_in = out
    return layers, out, size


def resnet50(classes: int = 1000) -> ModelSpec:
    """ResNet-50 v1.5 on 224x224 RGB images: 25.6 M parameters, about 4.1 GMAC per image.

    >>> spec = resnet50()
    >>> spec.params
    25557032
    >>> round(spec.forward_flops / 2e9, 2)
    4.09
    """
    layers = [LayerShape("conv1", 3 * 49, 64, 112 * 112, bias=False)]
    bn_channels = 64
    c_in, size = 64, 56  # after the stride-2 max pool
    for i, (width, blocks, stride) in enumerate(
        ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))
    ):
        stage, c_in, size = _bottleneck_stage(f"layer{i + 1}", c_in, width, blocks, size, stride)
        layers += stage
        bn_channels += blocks * (width + width + 4 * width) + 4 * width  # + downsample's BN
    layers.append(LayerShape("fc", 2048, classes, 1, bias=True))
    return ModelSpec(
        "resnet50",
        tuple(layers),
        extra_params=2 * bn_channels,  # BatchNorm: a scale and a shift per channel
        description="ResNet-50 v1.5, ImageNet 224x224 (He et al. 2016)",
    )


def _from_table(name: str, entry: dict[str, object]) -> ModelSpec:
    raw = entry["layers"]
    assert isinstance(raw, list)
    layers = tuple(LayerShape(str(n), int(i), int(o), int(p), bool(b)) for n, i, o, p, b in raw)
    extra = entry.get("extra_params", 0)
    assert isinstance(extra, int)
    return ModelSpec(name, layers, extra, str(entry.get("description", "")))


#: Every preset by name: ``<conf model>-<conf data>`` and ``resnet50``.
MODELS: dict[str, ModelSpec] = {
    **{name: _from_table(name, entry) for name, entry in CONF_MODELS.items()},
    "resnet50": resnet50(),
}


def get_model(name: str) -> ModelSpec:
    """A preset by name.

    Raises:
        KeyError: Naming the presets that exist.
    """
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(
            f"unknown model preset {name!r}; presets: {', '.join(sorted(MODELS))}"
        ) from None
