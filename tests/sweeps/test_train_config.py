"""Bad configs fail before training, with a message naming the field and a valid override."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.tracking import TrackingError, check_tracking_uri, default_tracking_uri
from sweeps.checkpoint import save_checkpoint
from sweeps.config import ConfigError, compose, validate
from sweeps.schedule import learning_rate, scaled_lr
from sweeps.train import EXIT_BAD_CONFIG, fingerprint, main


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["batch_size=0"], "batch_size"),
        (["epochs=-1"], "epochs"),
        (["target_accuracy=1.5"], "target_accuracy"),
        (["optimizer.lr=0"], "optimizer.lr"),
        (["optimizer.lr=fast"], "optimizer.lr"),
        (["optimizer.momentum=0", "optimizer.nesterov=true"], "optimizer.nesterov"),
        (["optimizer=kfac", "optimizer.kfac.damping=-1"], "optimizer.kfac.damping"),
        (["optimizer=kfac", "optimizer.kfac.inverse=lu"], "optimizer.kfac.inverse"),
        (["optimizer=kfac", "optimizer.kfac.fisher=exact"], "optimizer.kfac.fisher"),
        (
            [
                "optimizer=kfac",
                "optimizer.kfac.factor_interval=3",
                "optimizer.kfac.inverse_interval=10",
            ],
            "optimizer.kfac.inverse_interval",
        ),
        (["model=param", "model.depth=2", "model.kernel_sizes=[3,3,3]"], "model.kernel_sizes"),
        (["model=param", "model.activation=swish"], "model.activation"),
        (["model=resnet", "model.norm=layer"], "model.norm"),
        (["model=cnn", "model.channels=[]"], "model.channels"),
        (["data=synthetic", "data.shape=[8,8]"], "data.shape"),
        (["data.val_fraction=1.0"], "data.val_fraction"),
        (["schedule=step", "schedule.milestones=[1.5]"], "schedule.milestones"),
        (["device=tpu"], "device"),
    ],
)
def test_bad_value_names_its_field(overrides: list[str], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(compose(overrides))
    assert info.value.field == field
    assert f"invalid {field}=" in str(info.value) and "for example:" in str(info.value)


def test_every_shipped_option_validates() -> None:
    for group, options in {
        "model": ("mlp", "cnn", "resnet", "param"),
        "data": ("digits", "mnist5k", "mnist1d", "synthetic"),
        "optimizer": ("sgd", "kfac"),
        "schedule": ("cosine", "step", "constant"),
    }.items():
        for option in options:
            validate(compose([f"{group}={option}"]))


def test_errors_found_at_start_of_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"invalid batch_size=5000: larger than the 1438"):
        main(compose(["batch_size=5000", "tracking.enabled=false"]))
    with pytest.raises(TrackingError, match=r"invalid tracking\.uri='http://:5000': no host"):
        main(compose(["tracking.uri=http://:5000", "max_steps=1"]))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        main(compose(["tracking.enabled=false"]))


def test_checkpoint_of_another_config_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "c.pt"
    base = ["tracking.enabled=false", f"checkpoint.path={ckpt}", "checkpoint.every_steps=2"]
    save_checkpoint(ckpt, {"fingerprint": "0" * 12, "world_size": 1})
    with pytest.raises(ConfigError, match=r"checkpoint\.path"):
        main(compose([*base, "max_steps=3"]))
    result = main(compose([*base, "max_steps=3", "checkpoint.resume=false"]))
    assert result["steps"] == 3


def test_fingerprint_ignores_how_a_job_reports() -> None:
    a = validate(compose(["tracking.enabled=false", "log_every_steps=5"]))
    b = validate(compose(["checkpoint.every_steps=100", "num_threads=1"]))
    c = validate(compose(["seed=1"]))
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)


def test_cli_prints_the_field_and_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sweeps.train", "optimizer=kfac", "optimizer.kfac.damping=0",
         f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == EXIT_BAD_CONFIG
    assert "error: invalid optimizer.kfac.damping=0" in done.stderr
    assert "Traceback" not in done.stderr


def test_tracking_uris_are_checked() -> None:
    assert check_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert check_tracking_uri("http://localhost:5000")
    assert default_tracking_uri("/x").startswith("sqlite:////x/mlflow.db")
    assert check_tracking_uri("http://mlflow.example.org")  # a lab's server on another host
    for bad in ("file:///tmp/mlruns", "sqlite://relative.db", "/tmp"):
        with pytest.raises(TrackingError, match=r"tracking\.uri"):
            check_tracking_uri(bad)


def test_schedules() -> None:
    cos = {"name": "cosine", "warmup_epochs": 1.0, "min_lr_factor": 0.0}
    assert [learning_rate(cos, 1.0, s, 20, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate(cos, 1.0, 4, 20, 4) == 1.0
    assert learning_rate(cos, 1.0, 19, 20, 4) == pytest.approx(0.0, abs=1e-12)
    step = {"name": "step", "warmup_epochs": 0.0, "milestones": [0.5, 0.75], "gamma": 0.1}
    assert [learning_rate(step, 1.0, s, 8, 4) for s in (0, 3, 4, 6)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.01]
    )
    assert scaled_lr(0.1, 4096, 128) == pytest.approx(3.2)
    assert scaled_lr(0.1, 4096, None) == 0.1


@pytest.mark.parametrize(
    "model",
    [
        ["model=mlp"],
        ["model=cnn", "model.channels=[4]", "model.hidden=8"],
        ["model=resnet", "model.width=4", "model.blocks=[1,1]"],
        ["model=param", "model.width=8", "model.depth=2", "model.kernel_sizes=[3,5]"],
        ["model=param", "model.kind=mlp", "model.width=8", "model.skip=false"],
    ],
)
def test_every_model_trains_with_kfac(
    model: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    overrides = [
        *model, "optimizer=kfac", "data=synthetic", "data.num_samples=200", "batch_size=32",
        "max_steps=4", "optimizer.kfac.inverse_interval=2", "tracking.enabled=false",
        "num_threads=1",
    ]  # fmt: skip
    result = main(compose(overrides))
    assert result["status"] == "completed" and result["steps"] == 4
    assert result["step_time_ms"]["curvature"] > 0 and result["step_time_ms"]["inverse"] > 0
