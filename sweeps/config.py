"""Checking the training config, and composing it without the command line.

Hydra already refuses unknown keys (the config is in struct mode) and unknown group options. What
it cannot know is which *values* make sense; :func:`validate` checks them before any data is
loaded, so a sweep with a typo fails in a second with a message naming the field, not an hour in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from orchestrator.exceptions import OrchestratorError

__all__ = ["CONF_DIR", "ConfigError", "compose", "to_dict", "validate"]

#: The folder holding ``config.yaml`` and the config groups.
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

MODELS = ("mlp", "cnn", "resnet", "param")
DATASETS = ("digits", "mnist5k", "mnist1d", "synthetic")
OPTIMIZERS = ("sgd", "kfac")
SCHEDULES = ("cosine", "step", "constant")
ACTIVATIONS = ("relu", "gelu", "silu", "tanh")


class ConfigError(OrchestratorError, ValueError):
    """A training config value is invalid.

    Args:
        field: Dotted config path, e.g. ``"optimizer.kfac.damping"``.
        value: The value that came.
        reason: What is expected.
        example: A valid command-line override for the field.
    """

    def __init__(self, field: str, value: object, reason: str, example: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"invalid {field}={value!r}: {reason} (for example: {example})")


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the training config as ``python -m sweeps.train`` would, without running it.

    Args:
        overrides: Hydra overrides, e.g. ``["optimizer=kfac", "batch_size=256"]``.

    Returns:
        The composed config (Hydra's own ``hydra`` node removed).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def to_dict(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Resolve a config into plain containers.

    Args:
        cfg: A Hydra/OmegaConf config or a plain mapping.

    Returns:
        A plain, fully resolved ``dict``.
    """
    if isinstance(cfg, DictConfig):
        out = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(out, dict)
        return {str(k): v for k, v in out.items()}
    return dict(cfg)


def _get(cfg: Mapping[str, Any], path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(path, None, "missing", f"{path}=<value> (see conf/)")
        node = node[part]
    return node


def _int(
    cfg: Mapping[str, Any], path: str, lo: int, example: str, *, optional: bool = False
) -> None:
    value = _get(cfg, path)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(path, value, f"expected an integer >= {lo}", example)


def _float(
    cfg: Mapping[str, Any],
    path: str,
    lo: float,
    hi: float,
    example: str,
    *,
    optional: bool = False,
    open_lo: bool = False,
) -> None:
    value = _get(cfg, path)
    if value is None and optional:
        return
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        ok = (value > lo if open_lo else value >= lo) and value <= hi
    if not ok:
        low = f"> {lo}" if open_lo else f">= {lo}"
        raise ConfigError(path, value, f"expected a number {low} and <= {hi}", example)


def _choice(cfg: Mapping[str, Any], path: str, choices: Sequence[object], example: str) -> None:
    value = _get(cfg, path)
    if value not in choices:
        raise ConfigError(path, value, f"expected one of {list(choices)}", example)


def _int_list(cfg: Mapping[str, Any], path: str, example: str, *, allow_int: bool = False) -> None:
    value = _get(cfg, path)
    if allow_int and isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise ConfigError(path, value, "expected a non-empty list of positive integers", example)


def validate(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Check every value of a training config.

    Args:
        cfg: The composed config.

    Returns:
        The config as a plain, resolved ``dict``.

    Raises:
        ConfigError: Naming the first bad field, what is expected and a valid override.
    """
    c = to_dict(cfg)
    _int(c, "seed", 0, "seed=0")
    _int(c, "batch_size", 1, "batch_size=256")
    _int(c, "epochs", 1, "epochs=10")
    _int(c, "max_steps", 1, "max_steps=500", optional=True)
    _float(c, "target_accuracy", 0.0, 1.0, "target_accuracy=0.95", optional=True, open_lo=True)
    _int(c, "eval_every_steps", 1, "eval_every_steps=50", optional=True)
    _int(c, "log_every_steps", 1, "log_every_steps=20")
    _int(c, "num_threads", 1, "num_threads=1", optional=True)
    _choice(c, "device", ("auto", "cpu", "cuda"), "device=cpu")
    _choice(c, "tracking.enabled", (True, False), "tracking.enabled=false")
    _int(c, "checkpoint.every_steps", 0, "checkpoint.every_steps=0")
    _choice(c, "checkpoint.resume", (True, False), "checkpoint.resume=true")

    _choice(c, "model.name", MODELS, "model=mlp")
    model = c["model"]["name"]
    if model in ("mlp", "cnn", "resnet"):
        _choice(c, "model.activation", ACTIVATIONS, "model.activation=relu")
    if model == "mlp":
        _int_list(c, "model.hidden", "model.hidden=[256,128]")
    elif model == "cnn":
        _int_list(c, "model.channels", "model.channels=[16,32]")
        _int(c, "model.kernel_size", 1, "model.kernel_size=3")
        _int(c, "model.hidden", 1, "model.hidden=128")
    elif model == "resnet":
        _int(c, "model.width", 1, "model.width=16")
        _int_list(c, "model.blocks", "model.blocks=[1,1,1]")
        _choice(c, "model.norm", ("batch", "group", "none"), "model.norm=batch")
    else:
        _choice(c, "model.kind", ("conv", "mlp"), "model.kind=conv")
        _int(c, "model.depth", 1, "model.depth=3")
        _int(c, "model.width", 1, "model.width=32")
        _int_list(c, "model.kernel_sizes", "model.kernel_sizes=[3,3,3]", allow_int=True)
        ks = c["model"]["kernel_sizes"]
        if isinstance(ks, Sequence) and len(ks) != c["model"]["depth"]:
            raise ConfigError(
                "model.kernel_sizes",
                ks,
                f"needs one kernel size per layer (model.depth={c['model']['depth']})",
                "model.kernel_sizes=3",
            )
        _choice(c, "model.skip", (True, False), "model.skip=true")
        _choice(c, "model.activation", ACTIVATIONS, "model.activation=relu")

    _choice(c, "data.name", DATASETS, "data=digits")
    _float(c, "data.val_fraction", 0.0, 0.9, "data.val_fraction=0.2", open_lo=True)
    _int(c, "data.split_seed", 0, "data.split_seed=0")
    if c["data"]["name"] in ("mnist1d", "synthetic"):
        _int(c, "data.num_samples", 20, "data.num_samples=10000")
        _int(c, "data.generation_seed", 0, "data.generation_seed=42")
    if c["data"]["name"] == "synthetic":
        _int_list(c, "data.shape", "data.shape=[1,8,8]")
        if len(c["data"]["shape"]) != 3:
            raise ConfigError(
                "data.shape",
                c["data"]["shape"],
                "expected [channels, height, width]",
                "data.shape=[1,8,8]",
            )
        _int(c, "data.num_classes", 2, "data.num_classes=10")

    _choice(c, "optimizer.name", OPTIMIZERS, "optimizer=kfac")
    _float(c, "optimizer.lr", 0.0, 1e3, "optimizer.lr=0.1", open_lo=True)
    _float(c, "optimizer.momentum", 0.0, 0.999, "optimizer.momentum=0.9")
    _choice(c, "optimizer.nesterov", (True, False), "optimizer.nesterov=true")
    _float(c, "optimizer.weight_decay", 0.0, 1.0, "optimizer.weight_decay=5e-4")
    if c["optimizer"]["nesterov"] and c["optimizer"]["momentum"] == 0:
        raise ConfigError(
            "optimizer.nesterov",
            True,
            "Nesterov momentum needs optimizer.momentum > 0",
            "optimizer.momentum=0.9",
        )
    if c["optimizer"]["name"] == "kfac":
        k = "optimizer.kfac."
        _choice(c, k + "fisher", ("sampled", "empirical"), k + "fisher=empirical")
        _float(c, k + "factor_decay", 0.0, 0.9999, k + "factor_decay=0.95")
        _int(c, k + "factor_interval", 1, k + "factor_interval=1")
        _int(c, k + "inverse_interval", 1, k + "inverse_interval=10")
        _float(c, k + "damping", 0.0, 1e3, k + "damping=0.001", open_lo=True)
        _float(c, k + "damping_decay", 0.0, 1.0, k + "damping_decay=0.5", open_lo=True)
        _int(c, k + "damping_decay_steps", 1, k + "damping_decay_steps=1000")
        _float(c, k + "damping_min", 0.0, 1e3, k + "damping_min=1e-6", open_lo=True)
        _float(c, k + "kl_clip", 0.0, 1e3, k + "kl_clip=0.001", optional=True, open_lo=True)
        _choice(c, k + "inverse", ("eigen", "cholesky"), k + "inverse=eigen")
        _choice(c, k + "distribute_inverse", (True, False), k + "distribute_inverse=true")
        _int(c, k + "factor_samples", 1, k + "factor_samples=512", optional=True)
        if c["optimizer"]["kfac"]["inverse_interval"] % c["optimizer"]["kfac"]["factor_interval"]:
            raise ConfigError(
                k + "inverse_interval",
                c["optimizer"]["kfac"]["inverse_interval"],
                f"must be a multiple of {k}factor_interval "
                f"({c['optimizer']['kfac']['factor_interval']}), so inverses see fresh factors",
                k + "inverse_interval=10",
            )

    _choice(c, "schedule.name", SCHEDULES, "schedule=cosine")
    _float(c, "schedule.warmup_epochs", 0.0, 1e4, "schedule.warmup_epochs=1")
    _int(c, "schedule.base_batch_size", 1, "schedule.base_batch_size=128", optional=True)
    if c["schedule"]["name"] == "cosine":
        _float(c, "schedule.min_lr_factor", 0.0, 1.0, "schedule.min_lr_factor=0.0")
    if c["schedule"]["name"] == "step":
        _float(c, "schedule.gamma", 0.0, 1.0, "schedule.gamma=0.1", open_lo=True)
        ms = _get(c, "schedule.milestones")
        if not isinstance(ms, Sequence) or not all(
            isinstance(m, int | float) and 0 < m < 1 for m in ms
        ):
            raise ConfigError(
                "schedule.milestones",
                ms,
                "expected fractions of training in (0, 1)",
                "schedule.milestones=[0.5,0.75]",
            )
    return c
