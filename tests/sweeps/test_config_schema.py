"""The config's schema (``sweeps/config.py``): dataclasses checked by OmegaConf, one per option."""

from __future__ import annotations

import pytest
from hydra.core.config_store import ConfigStore

from sweeps.config import (
    CONF_DIR,
    GROUPS,
    CNNConfig,
    ConfigError,
    KFACOptimizerConfig,
    OptimizerConfig,
    ParamNetConfig,
    TrainConfig,
    compose,
    fingerprint,
    parse,
    validate,
)


def test_every_conf_option_has_a_schema() -> None:
    for group, spec in GROUPS.items():
        shipped = {p.stem for p in (CONF_DIR / group).glob("*.yaml")}
        assert shipped == set(spec.options), group
        for option in shipped:
            assert compose([f"{group}={option}"])[group]["name"] == option


def test_schemas_are_in_hydras_config_store() -> None:
    store = ConfigStore.instance()
    assert store.load("schema/train.yaml").node._metadata.object_type is TrainConfig
    for group, spec in GROUPS.items():
        assert store.list(f"schema/{group}") == sorted(f"{o}.yaml" for o in spec.options)
    assert store.load("schema/model/cnn.yaml").node._metadata.object_type is CNNConfig


def test_parse_returns_the_option_dataclasses() -> None:
    config = parse(compose(["optimizer=kfac", "model=param", "optimizer.lr=1"]))
    assert isinstance(config, TrainConfig)
    assert isinstance(config.model, ParamNetConfig) and config.model.kernel_sizes == [3, 3, 3]
    assert isinstance(config.optimizer, KFACOptimizerConfig)
    assert config.optimizer.lr == 1.0 and isinstance(config.optimizer.lr, float)
    assert config.optimizer.kfac.kl_clip == 0.001 and config.optimizer.kfac.factor_samples is None
    sgd = parse(compose([])).optimizer
    assert type(sgd) is OptimizerConfig and not hasattr(sgd, "kfac")


def test_experiment_presets_parse() -> None:
    for preset in ("kfac_vs_sgd", "batch_scaling", "hpo", "nas"):
        config = parse(compose([f"experiment={preset}"]))
        assert config.nodes == (1 if preset == "kfac_vs_sgd" else None)
    assert parse(compose(["experiment=nas"])).model.kernel_sizes == 3  # type: ignore[attr-defined]


def test_validate_keeps_values_as_composed_so_fingerprints_do_not_move() -> None:
    # Checkpoints are named and matched by these hashes: values stay as composed (1, not 1.0),
    # no key is added (no "nodes": None), so the hashes equal those of the hand-written checks.
    assert fingerprint(validate(compose([]))) == "c000acba185e"
    overrides = [
        "optimizer=kfac",
        "model=param",
        "data=synthetic",
        "schedule=step",
        "optimizer.lr=1",
    ]
    assert validate(compose(overrides))["optimizer"]["lr"] == 1
    # Moves with the conf: optimizer.kfac.inverse became cholesky (issue 18).
    assert fingerprint(validate(compose(overrides))) == "8557e9347c1f"
    assert fingerprint(validate(compose(["experiment=kfac_vs_sgd"]))) == "98d73defb827"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["optimizer.lr=fast"],
            "invalid optimizer.lr='fast': expected a number > 0.0 and <= 1000.0 "
            "(for example: optimizer.lr=0.1)",
        ),
        (
            ["optimizer=kfac", "optimizer.kfac.damping=0"],
            "invalid optimizer.kfac.damping=0: expected a number > 0.0 and <= 1000.0 "
            "(for example: optimizer.kfac.damping=0.001)",
        ),
        (
            ["model.hidden=[64,x]"],
            "invalid model.hidden=[64, 'x']: expected a non-empty list of positive integers "
            "(for example: model.hidden=[256,128])",
        ),
        (["seed=1.5"], "invalid seed=1.5: expected an integer >= 0 (for example: seed=0)"),
        (
            ["+model.dropout=0.1"],
            "invalid model.dropout=0.1: no such field in MLPConfig (sweeps/config.py); drop the "
            "key (for example: ~model.dropout)",
        ),
        (
            ["optimizer=kfac", "~optimizer.kfac.damping"],
            "invalid optimizer.kfac.damping=None: missing "
            "(for example: optimizer.kfac.damping=0.001)",
        ),
        (
            ["model.name=transformer"],
            "invalid model.name='transformer': expected one of ['mlp', 'cnn', 'resnet', "
            "'param'] (for example: model=mlp)",
        ),
        (
            ["model=param", "model.kernel_sizes=[3,true,3]"],
            "invalid model.kernel_sizes=[3, True, 3]: expected a non-empty list of positive "
            "integers (for example: model.kernel_sizes=[3,3,3])",
        ),
    ],
)
def test_messages_name_the_field_and_a_fix(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(compose(overrides))
    assert str(info.value) == message
