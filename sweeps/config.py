"""The training job's config: its schema, the checks its types cannot express, and composing it.

Where things are:

* ``conf/`` holds the values: ``config.yaml`` and one YAML file per option of each group
  (``conf/model/mlp.yaml``, ``conf/optimizer/kfac.yaml``, ...).
* This module holds the schema: :class:`TrainConfig` and one dataclass per group option
  (:data:`GROUPS`). Each class's docstring says what its fields mean; each field says what it
  accepts beyond its type (:class:`Rule`) and gives a valid example for error messages.
* :func:`parse` checks a composed config against the schema and returns it typed.

Hydra composes the YAML and refuses unknown keys and unknown group options (the config is in
struct mode). The values are checked after composition, by :func:`parse`, before any data is
loaded: OmegaConf converts every value to its field's type (the option's ``name`` picks the
dataclass of a group, e.g. ``model.name=cnn`` picks :class:`CNNConfig`), then each field's
:class:`Rule` and the rules across fields (``check_together``) run. The first bad value raises a
:class:`ConfigError` naming the field, what is expected and a valid override, so a sweep with a
typo fails in a second, not an hour in (``python -m sweeps.train`` exits with status 2).

The dataclasses are also registered in Hydra's ConfigStore (:func:`register_schemas`):
``schema/train`` and ``schema/<group>/<option>``. Hydra then knows them as structured configs
(``python -m sweeps.train --help`` lists them); the YAML options do not extend them at
composition time, since a type error there would stop Hydra before the job could report it as
a bad config.

To add a group option: write ``conf/<group>/<name>.yaml`` with ``name: <name>``, a dataclass
here with one field per key (or reuse one), and an entry in :data:`GROUPS`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from orchestrator.exceptions import OrchestratorError

__all__ = [
    "CONF_DIR",
    "GROUPS",
    "CNNConfig",
    "CheckpointConfig",
    "ConfigError",
    "CosineScheduleConfig",
    "DataConfig",
    "GeneratedDataConfig",
    "Group",
    "KFACConfig",
    "KFACOptimizerConfig",
    "MLPConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ParamNetConfig",
    "ResNetConfig",
    "Rule",
    "ScheduleConfig",
    "StepScheduleConfig",
    "SyntheticDataConfig",
    "TrackingConfig",
    "TrainConfig",
    "compose",
    "fingerprint",
    "parse",
    "register_schemas",
    "to_dict",
    "validate",
]

#: The folder holding ``config.yaml`` and the config groups.
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

ACTIVATIONS = ("relu", "gelu", "silu", "tanh")

# Fields that change how a job runs or reports, not what it computes: a checkpoint written under
# one value resumes under another.
_VOLATILE = (
    "tracking",
    "checkpoint",
    "log_every_steps",
    "eval_every_steps",
    "num_threads",
    "run_name",
)


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


# --- What a field accepts beyond its type -------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """What a config field accepts beyond its type, and a valid value to suggest.

    Attributes:
        expected: What is expected, as the error message words it.
        accepts: True for a good value (of the field's type; ``None`` never reaches it).
        example: A valid value as written on the command line, e.g. ``"[256,128]"``.
    """

    expected: str
    accepts: Callable[[Any], bool]
    example: str

    def error(self, path: str, value: object) -> ConfigError:
        """The error for a bad ``value`` at the dotted ``path``."""
        return ConfigError(path, value, self.expected, f"{path}={self.example}")


# The field helpers below return ``dataclasses.field(...)``: no default (the YAML gives the
# value), the rule in the field's metadata. (Ruff's RUF009 cannot see that for list fields.)


def _setting(rule: Rule) -> Any:
    return field(default=MISSING, metadata={"rule": rule})


def integer(minimum: int, *, example: str) -> Any:
    """An ``int`` field of at least ``minimum``."""
    return _setting(Rule(f"expected an integer >= {minimum}", lambda v: v >= minimum, example))


def number(minimum: float, maximum: float, *, example: str, exclusive_minimum: bool = False) -> Any:
    """A ``float`` field in ``[minimum, maximum]`` (``(minimum, maximum]`` if exclusive)."""
    low = f"> {minimum}" if exclusive_minimum else f">= {minimum}"

    def accepts(v: float) -> bool:
        return (v > minimum if exclusive_minimum else v >= minimum) and v <= maximum

    return _setting(Rule(f"expected a number {low} and <= {maximum}", accepts, example))


def one_of(*choices: str, example: str) -> Any:
    """A ``str`` field taking one of ``choices``."""
    return _setting(Rule(f"expected one of {list(choices)}", lambda v: v in choices, example))


def flag(*, example: str) -> Any:
    """A ``bool`` field (its type says it all; the rule gives the message and the example)."""
    return _setting(Rule("expected one of [True, False]", lambda v: True, example))


def text(*, example: str) -> Any:
    """A ``str`` field (any text)."""
    return _setting(Rule("expected a string", lambda v: True, example))


def _positive_ints(value: object) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    )


def positive_ints(*, example: str) -> Any:
    """A ``list[int]`` field: not empty, every entry >= 1."""
    return _setting(Rule("expected a non-empty list of positive integers", _positive_ints, example))


def _kernel_sizes(value: object) -> bool:
    one_int = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    return one_int or _positive_ints(value)


# --- The schema ---------------------------------------------------------------------------------


@dataclass
class Schema:
    """Base of the config dataclasses: the hook for rules that involve several fields."""

    def check_together(self, path: str) -> None:
        """Raise :class:`ConfigError` when fields are fine alone but not together.

        Args:
            path: Where this node sits in the config, with a trailing dot (``"optimizer."``).
        """


@dataclass
class ModelConfig(Schema):
    """The ``model`` group: which network to train (``sweeps/models.py``).

    Attributes:
        name: ``mlp``, ``cnn``, ``resnet`` or ``param``; selects the option's schema below.
    """

    name: str = MISSING


@dataclass
class MLPConfig(ModelConfig):
    """``model=mlp``: fully connected layers on the flattened input.

    Attributes:
        hidden: Width of each hidden layer, e.g. ``[256, 128]``.
        activation: ``relu``, ``gelu``, ``silu`` or ``tanh``.
    """

    hidden: list[int] = positive_ints(example="[256,128]")  # noqa: RUF009
    activation: str = one_of(*ACTIVATIONS, example="relu")


@dataclass
class CNNConfig(ModelConfig):
    """``model=cnn``: convolutions with max-pooling, then one hidden linear layer.

    Attributes:
        channels: Output channels of each convolution, e.g. ``[16, 32]``.
        kernel_size: Square kernel size (clipped to the input).
        hidden: Width of the hidden linear layer.
        activation: ``relu``, ``gelu``, ``silu`` or ``tanh``.
    """

    channels: list[int] = positive_ints(example="[16,32]")  # noqa: RUF009
    kernel_size: int = integer(1, example="3")
    hidden: int = integer(1, example="128")
    activation: str = one_of(*ACTIVATIONS, example="relu")


@dataclass
class ResNetConfig(ModelConfig):
    """``model=resnet``: a stem, then stages of basic blocks (width, 2x, 4x, ...).

    Attributes:
        width: Channels of the first stage.
        blocks: Basic blocks per stage, e.g. ``[1, 1, 1]``.
        norm: ``batch``, ``group`` or ``none``.
        activation: ``relu``, ``gelu``, ``silu`` or ``tanh``.
    """

    width: int = integer(1, example="16")
    blocks: list[int] = positive_ints(example="[1,1,1]")  # noqa: RUF009
    norm: str = one_of("batch", "group", "none", example="batch")
    activation: str = one_of(*ACTIVATIONS, example="relu")


@dataclass
class ParamNetConfig(ModelConfig):
    """``model=param``: the network the NAS sweep searches (``conf/experiment/nas.yaml``).

    Attributes:
        kind: ``conv`` (convolutions, then a linear head) or ``mlp``.
        depth: Number of hidden layers.
        width: Channels or units per hidden layer.
        kernel_sizes: One kernel size per layer (a list of ``depth`` ints), or one int for all.
        skip: Residual connections.
        activation: ``relu``, ``gelu``, ``silu`` or ``tanh``.
    """

    kind: str = one_of("conv", "mlp", example="conv")
    depth: int = integer(1, example="3")
    width: int = integer(1, example="32")
    # An int or a list of ints: OmegaConf has no such union, so the rule checks the type.
    kernel_sizes: Any = _setting(  # noqa: RUF009
        Rule("expected a non-empty list of positive integers", _kernel_sizes, "[3,3,3]")
    )
    skip: bool = flag(example="true")
    activation: str = one_of(*ACTIVATIONS, example="relu")

    def check_together(self, path: str) -> None:
        """A list of kernel sizes has one per layer."""
        if isinstance(self.kernel_sizes, list) and len(self.kernel_sizes) != self.depth:
            raise ConfigError(
                f"{path}kernel_sizes",
                self.kernel_sizes,
                f"needs one kernel size per layer ({path}depth={self.depth})",
                f"{path}kernel_sizes=3",
            )


@dataclass
class DataConfig(Schema):
    """The ``data`` group, and ``data=digits`` / ``data=mnist5k`` (shipped with packages).

    Attributes:
        name: ``digits``, ``mnist5k``, ``mnist1d`` or ``synthetic``; selects the schema.
        val_fraction: Share of the samples held out for validation.
        split_seed: Seed of the train/validation split (not the training seed, so runs with
            different seeds see the same validation set).
    """

    name: str = MISSING
    val_fraction: float = number(0.0, 0.9, example="0.2", exclusive_minimum=True)
    split_seed: int = integer(0, example="0")


@dataclass
class GeneratedDataConfig(DataConfig):
    """``data=mnist1d``: a dataset generated locally.

    Attributes:
        num_samples: Samples to generate (training plus validation).
        generation_seed: Seed of the generator.
    """

    num_samples: int = integer(20, example="10000")
    generation_seed: int = integer(0, example="42")


@dataclass
class SyntheticDataConfig(GeneratedDataConfig):
    """``data=synthetic``: Gaussian inputs labelled by a random teacher network.

    Attributes:
        shape: One input's ``[channels, height, width]``.
        num_classes: Number of classes.
    """

    shape: list[int] = positive_ints(example="[1,8,8]")  # noqa: RUF009
    num_classes: int = integer(2, example="10")

    def check_together(self, path: str) -> None:
        """An image shape has three entries."""
        if len(self.shape) != 3:
            raise ConfigError(
                f"{path}shape",
                self.shape,
                "expected [channels, height, width]",
                f"{path}shape=[1,8,8]",
            )


@dataclass
class KFACConfig(Schema):
    """``optimizer.kfac``: K-FAC's settings (:class:`sweeps.kfac.KFACSettings`).

    Attributes:
        fisher: ``sampled`` (the true Fisher: targets drawn from the model) or ``empirical``
            (the labels' gradients).
        factor_decay: Exponential moving average weight of the old Kronecker factors.
        factor_interval: Steps between factor updates.
        inverse_interval: Steps between inverse updates; a multiple of ``factor_interval``.
        damping: Factored Tikhonov damping (with the pi correction).
        damping_decay: Multiply the damping by this every ``damping_decay_steps`` steps...
        damping_decay_steps: ...
        damping_min: ...never going below this.
        kl_clip: Scale the update so ``lr^2 * sum(v . g) <= kl_clip``; null turns it off.
        inverse: ``cholesky`` (jitter retries, then eigen; the default) or ``eigen``: the same
            damped inverse to round-off, Cholesky 3.5-6x cheaper.
        distribute_inverse: Compute each inverse on one rank (greedy by cost), then broadcast.
        factor_samples: Estimate the factors on at most this many samples per rank (null: all).
    """

    fisher: str = one_of("sampled", "empirical", example="empirical")
    factor_decay: float = number(0.0, 0.9999, example="0.95")
    factor_interval: int = integer(1, example="1")
    inverse_interval: int = integer(1, example="10")
    damping: float = number(0.0, 1e3, example="0.001", exclusive_minimum=True)
    damping_decay: float = number(0.0, 1.0, example="0.5", exclusive_minimum=True)
    damping_decay_steps: int = integer(1, example="1000")
    damping_min: float = number(0.0, 1e3, example="1e-6", exclusive_minimum=True)
    kl_clip: float | None = number(0.0, 1e3, example="0.001", exclusive_minimum=True)
    inverse: str = one_of("cholesky", "eigen", example="cholesky")
    distribute_inverse: bool = flag(example="true")
    factor_samples: int | None = integer(1, example="512")

    def check_together(self, path: str) -> None:
        """Inverses are refreshed on steps that also refresh the factors."""
        if self.inverse_interval % self.factor_interval:
            raise ConfigError(
                f"{path}inverse_interval",
                self.inverse_interval,
                f"must be a multiple of {path}factor_interval ({self.factor_interval}), "
                "so inverses see fresh factors",
                f"{path}inverse_interval=10",
            )


@dataclass
class OptimizerConfig(Schema):
    """The ``optimizer`` group, and ``optimizer=sgd``: ``torch.optim.SGD``.

    Attributes:
        name: ``sgd`` or ``kfac``; selects the schema.
        lr: Peak learning rate (at ``schedule.base_batch_size`` when that is set).
        momentum: Momentum factor.
        nesterov: Nesterov momentum (needs ``momentum > 0``).
        weight_decay: L2 penalty.
    """

    name: str = MISSING
    lr: float = number(0.0, 1e3, example="0.1", exclusive_minimum=True)
    momentum: float = number(0.0, 0.999, example="0.9")
    nesterov: bool = flag(example="true")
    weight_decay: float = number(0.0, 1.0, example="5e-4")

    def check_together(self, path: str) -> None:
        """Nesterov momentum needs some momentum."""
        if self.nesterov and self.momentum == 0:
            raise ConfigError(
                f"{path}nesterov",
                True,
                f"Nesterov momentum needs {path}momentum > 0",
                f"{path}momentum=0.9",
            )


@dataclass
class KFACOptimizerConfig(OptimizerConfig):
    """``optimizer=kfac``: the same SGD on gradients preconditioned by K-FAC.

    Attributes:
        kfac: K-FAC's own settings.
    """

    kfac: KFACConfig = field(default_factory=KFACConfig)


@dataclass
class ScheduleConfig(Schema):
    """The ``schedule`` group, and ``schedule=constant``: the learning rate over training.

    Every schedule starts with a linear warm-up (``sweeps/schedule.py``).

    Attributes:
        name: ``cosine``, ``step`` or ``constant``; selects the schema.
        warmup_epochs: Length of the linear warm-up, in epochs.
        base_batch_size: The linear scaling rule: ``lr * batch_size / base_batch_size``; null
            uses ``optimizer.lr`` as given.
    """

    name: str = MISSING
    warmup_epochs: float = number(0.0, 1e4, example="1")
    base_batch_size: int | None = integer(1, example="128")


@dataclass
class CosineScheduleConfig(ScheduleConfig):
    """``schedule=cosine``: cosine decay after the warm-up.

    Attributes:
        min_lr_factor: The last step's learning rate, as a fraction of the peak.
    """

    min_lr_factor: float = number(0.0, 1.0, example="0.0")


def _fractions(value: list[float]) -> bool:
    return all(0 < m < 1 for m in value)


@dataclass
class StepScheduleConfig(ScheduleConfig):
    """``schedule=step``: multiply the learning rate by ``gamma`` at each milestone.

    Attributes:
        milestones: Fractions of the training length, each in (0, 1).
        gamma: The factor applied at each milestone.
    """

    milestones: list[float] = _setting(  # noqa: RUF009
        Rule("expected fractions of training in (0, 1)", _fractions, "[0.5,0.75]")
    )
    gamma: float = number(0.0, 1.0, example="0.1", exclusive_minimum=True)


@dataclass
class TrackingConfig(Schema):
    """``tracking``: where rank 0 logs params, metrics and tags (MLflow).

    A value given here wins; null follows MLflow's own variables, then the default
    (``orchestrator/tracking``, ``docs/sweeps.md``).

    Attributes:
        enabled: Log at all.
        uri: Any tracking URI MLflow serves: ``http(s)://HOST:PORT`` (any host; credentials from
            ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``), ``sqlite:///ABS.db``,
            ``postgresql://...``; null: ``MLFLOW_TRACKING_URI``, else
            ``sqlite:///<working folder>/mlflow.db``.
        experiment: MLflow experiment name; null: ``MLFLOW_EXPERIMENT_NAME``, else ``train``.
    """

    enabled: bool = flag(example="false")
    uri: str | None = text(example="http://mlflow.example.org:5000")
    experiment: str | None = text(example="train")


@dataclass
class CheckpointConfig(Schema):
    """``checkpoint``: saving and resuming (``sweeps/checkpoint.py``).

    A checkpoint is written on SIGTERM / SIGUSR1 (then the job exits with status 3,
    "preempted") and every ``every_steps`` steps when that is > 0.

    Attributes:
        path: The checkpoint file; null: ``checkpoints/<fingerprint>.pt`` in the job's folder.
        resume: Resume from ``path`` when it exists.
        every_steps: Steps between periodic checkpoints (0: none).
    """

    path: str | None = text(example="/tmp/job.pt")
    resume: bool = flag(example="true")
    every_steps: int = integer(0, example="0")


@dataclass
class TrainConfig(Schema):
    """The training job's config: ``conf/config.yaml`` and one option of each group.

    Attributes:
        model: What to train (``model=mlp|cnn|resnet|param``).
        data: On what (``data=digits|mnist5k|mnist1d|synthetic``).
        optimizer: How (``optimizer=sgd|kfac``).
        schedule: The learning rate over time (``schedule=cosine|step|constant``).
        seed: Seeds the model's initialisation and the batch order.
        batch_size: Global batch size, split evenly over the data-parallel ranks.
        epochs: Training length, unless ``max_steps`` is set.
        max_steps: Exactly this many steps (null: ``epochs`` epochs).
        target_accuracy: Stop as soon as validation accuracy reaches it, 0 < t <= 1 (null:
            train to the end).
        eval_every_steps: Also evaluate every N steps (null: at the end of each epoch only).
        log_every_steps: Window of steps for the throughput and step-time metrics.
        num_threads: Torch threads per rank (null: the cores shared out over this node's ranks).
        device: ``cpu``, ``cuda`` or ``auto`` (cuda when available).
        run_name: MLflow run name (null: in a multirun, the trial's overrides, e.g.
            ``batch_size=64,nodes=2,optimizer=kfac`` (``sweeps/train.py``); else
            ``<model>-<data>-<optimizer>-bs<batch>-s<seed>``).
        tracking: MLflow settings.
        checkpoint: Checkpoint settings.
        nodes: Process-nodes per job, read by the ``orch`` launcher (``hydra.launcher.nodes:
            ${nodes}`` in ``experiment=kfac_vs_sgd``); the job itself does not use it.
    """

    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    schedule: ScheduleConfig = MISSING
    seed: int = integer(0, example="0")
    batch_size: int = integer(1, example="256")
    epochs: int = integer(1, example="10")
    max_steps: int | None = integer(1, example="500")
    target_accuracy: float | None = number(0.0, 1.0, example="0.95", exclusive_minimum=True)
    eval_every_steps: int | None = integer(1, example="50")
    log_every_steps: int = integer(1, example="20")
    num_threads: int | None = integer(1, example="1")
    device: str = one_of("auto", "cpu", "cuda", example="cpu")
    run_name: str | None = text(example="my-run")
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    nodes: int | None = None


@dataclass(frozen=True)
class Group:
    """A config group: its options' schemas, chosen by the option's ``name``.

    Attributes:
        options: Option name to its dataclass.
        example: An option to suggest when ``name`` is unknown.
    """

    options: Mapping[str, type[Schema]]
    example: str


#: The config groups (``conf/<group>/``) and the schema of each option.
GROUPS: Mapping[str, Group] = {
    "model": Group(
        {"mlp": MLPConfig, "cnn": CNNConfig, "resnet": ResNetConfig, "param": ParamNetConfig},
        example="mlp",
    ),
    "data": Group(
        {
            "digits": DataConfig,
            "mnist5k": DataConfig,
            "mnist1d": GeneratedDataConfig,
            "synthetic": SyntheticDataConfig,
        },
        example="digits",
    ),
    "optimizer": Group({"sgd": OptimizerConfig, "kfac": KFACOptimizerConfig}, example="kfac"),
    "schedule": Group(
        {
            "cosine": CosineScheduleConfig,
            "step": StepScheduleConfig,
            "constant": ScheduleConfig,
        },
        example="cosine",
    ),
}


def register_schemas(store: ConfigStore | None = None) -> None:
    """Register the schema in Hydra's ConfigStore: ``schema/train``, ``schema/<group>/<option>``.

    Done once when this module is imported.

    Args:
        store: The store (Hydra's global one by default).
    """
    store = store or ConfigStore.instance()
    store.store(group="schema", name="train", node=TrainConfig)
    for group, spec in GROUPS.items():
        for option, schema in spec.options.items():
            store.store(group=f"schema/{group}", name=option, node=schema)


register_schemas()


# --- Checking a composed config -----------------------------------------------------------------


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


def parse(cfg: DictConfig | Mapping[str, Any]) -> TrainConfig:
    """Check every value of a composed config and return it typed.

    Args:
        cfg: The composed config (``compose(...)``, Hydra's, or a plain mapping of the same).

    Returns:
        The config as a :class:`TrainConfig` (group nodes as their option's dataclass).

    Raises:
        ConfigError: Naming the first bad field, what is expected and a valid override.
    """
    composed = to_dict(cfg)
    schema = _schema_for(composed)
    try:
        config = OmegaConf.to_object(OmegaConf.merge(schema, composed))
    except OmegaConfBaseException as e:
        raise _explain(e, schema, composed) from None
    assert isinstance(config, TrainConfig)
    _check(config, "", composed)
    return config


def validate(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """Check every value of a training config (:func:`parse`) and return it as composed.

    Args:
        cfg: The composed config.

    Returns:
        The config as a plain, resolved ``dict``, values as composed (what :func:`fingerprint`
        hashes, MLflow logs as params and a checkpoint records).

    Raises:
        ConfigError: Naming the first bad field, what is expected and a valid override.
    """
    parse(cfg)
    return to_dict(cfg)


def fingerprint(cfg: Mapping[str, Any]) -> str:
    """A 12-hex-digit hash of what a config computes (the checkpoint's default file name).

    Args:
        cfg: A validated config, as :func:`validate` returns it.

    Returns:
        The hash; equal configs up to the volatile fields (tracking, checkpoint, logging
        intervals, threads, run name) give equal hashes.
    """
    core = {k: v for k, v in cfg.items() if k not in _VOLATILE}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()[:12]


def _schema_for(composed: Mapping[str, Any]) -> DictConfig:
    # TrainConfig, its group nodes replaced by the dataclass their ``name`` selects.
    schema: DictConfig = OmegaConf.structured(TrainConfig)
    for group, spec in GROUPS.items():
        node = composed.get(group)
        name = node.get("name") if isinstance(node, Mapping) else None
        if not isinstance(name, str) or name not in spec.options:
            raise ConfigError(
                f"{group}.name",
                name,
                f"expected one of {list(spec.options)}",
                f"{group}={spec.example}",
            )
        schema[group] = OmegaConf.structured(spec.options[name])
    return schema


def _explain(error: OmegaConfBaseException, schema: DictConfig, composed: Any) -> ConfigError:
    # OmegaConf's error (a value its field's type refuses, a key no field has, a value missing)
    # as a ConfigError in the words of the field's rule.
    path = re.sub(r"(\[\d+\])+$", "", error.full_key or "")  # a list entry: the whole list
    value = _lookup(composed, path) if path else None
    if isinstance(error, ConfigKeyError):
        where = path.rpartition(".")[0]
        owner = OmegaConf.get_type(OmegaConf.select(schema, where)) if where else TrainConfig
        name = owner.__name__ if owner is not None else "the config"
        reason = f"no such field in {name} (sweeps/config.py); drop the key"
        return ConfigError(path, value, reason, f"~{path}")
    rule = _rule_at(schema, path)
    if rule is None:  # a message from OmegaConf about a field without a rule
        reason = str(error.msg).splitlines()[0]
        return ConfigError(path or "config", value, reason, f"see {CONF_DIR}")
    if isinstance(error, MissingMandatoryValue):
        return ConfigError(path, None, "missing", f"{path}={rule.example}")
    return rule.error(path, value)


def _lookup(node: Any, path: str) -> Any:
    for part in path.split(".") if path else ():
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _rule_at(schema: DictConfig, path: str) -> Rule | None:
    where, _, name = path.rpartition(".")
    owner = OmegaConf.get_type(OmegaConf.select(schema, where)) if where else TrainConfig
    if owner is None or not dataclasses.is_dataclass(owner):
        return None
    for f in dataclasses.fields(owner):
        if f.name == name:
            rule = f.metadata.get("rule")
            return rule if isinstance(rule, Rule) else None
    return None


def _check(node: Schema, path: str, composed: Mapping[str, Any]) -> None:
    # Every field's rule (declaration order, nested nodes in place), then the node's rules across
    # fields. A message shows the value as composed (``0``, not OmegaConf's ``0.0``).
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, Schema):
            _check(value, f"{path}{f.name}.", composed)
            continue
        rule = f.metadata.get("rule")
        if isinstance(rule, Rule) and value is not None and not rule.accepts(value):
            raise rule.error(f"{path}{f.name}", _lookup(composed, f"{path}{f.name}"))
    node.check_together(path)
