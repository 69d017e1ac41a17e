"""The Trainer's methods, driven one by one (``sweeps/trainer.py``), on one rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sweeps.config import compose, parse, to_dict
from sweeps.distributed import World
from sweeps.trainer import PHASES, Timers, Trainer, divergence

ONE_RANK = World(rank=0, size=1, local_rank=0, local_size=1, device=torch.device("cpu"))


def trainer(tmp_path: Path, *overrides: str) -> Trainer:
    cfg = compose(
        [
            "data=synthetic", "data.num_samples=200", "model.hidden=[16]", "batch_size=32",
            "tracking.enabled=false", "num_threads=1", f"checkpoint.path={tmp_path}/c.pt",
            *overrides,
        ]
    )  # fmt: skip
    return Trainer(parse(cfg), to_dict(cfg), ONE_RANK)


def test_step_evaluate_result(tmp_path: Path) -> None:
    t = trainer(tmp_path, "optimizer=kfac", "max_steps=3")
    assert (t.steps_per_epoch, t.total_steps) == (5, 3)
    before = [p.detach().clone() for p in t.model.parameters()]
    t.step()
    assert t.step_count == 1 and t.epoch_sums[2] == 32
    assert any(not torch.equal(a, b) for a, b in zip(before, t.model.parameters(), strict=True))
    assert t.timers.phases["curvature"] > 0 and set(t.timers.phases) == set(PHASES)
    loss, accuracy = t.evaluate()
    assert loss > 0 and 0 <= accuracy <= 1
    result = t.result()
    assert result["status"] == "completed" and result["steps"] == 1
    assert result["train_loss"] is not None  # the partial epoch's statistics
    assert result["val_loss"] == loss and "n_params" in result


def test_checkpoint_then_resume_restores_the_state(tmp_path: Path) -> None:
    first = trainer(tmp_path, "max_steps=4")
    first.step()
    first.step()
    first.save_checkpoint()
    second = trainer(tmp_path, "max_steps=4")
    assert second.resume()
    assert second.step_count == 2 and torch.equal(second.epoch_sums, first.epoch_sums)
    assert second.timers == first.timers
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not trainer(tmp_path, "max_steps=4", "checkpoint.resume=false").resume()


def test_run_to_the_target_accuracy(tmp_path: Path) -> None:
    t = trainer(tmp_path, "epochs=3", "target_accuracy=0.01")
    result = t.run()
    assert result["status"] == "completed" and result["reached_target"]
    assert result["steps"] == result["steps_to_target"] == t.steps_per_epoch  # first epoch end
    assert not (tmp_path / "c.pt").exists() and (tmp_path / "c.result.json").exists()


def test_timers_round_trip_through_a_checkpoint_dict() -> None:
    timers = Timers(train_time=1.5, to_target={"steps": 3, "epochs": 1.0, "time": 1.0})
    state = timers.to_state()
    assert list(state) == ["train_time", "log_time", "to_target", "best", "phases"]
    assert Timers.from_state(state) == timers


@pytest.mark.parametrize("batch_size", [7, 500])
def test_bad_batch_size_is_refused_before_training(tmp_path: Path, batch_size: int) -> None:
    from sweeps.config import ConfigError

    two_ranks = World(rank=0, size=2, local_rank=0, local_size=2, device=torch.device("cpu"))
    cfg = compose(["data=synthetic", "data.num_samples=200", f"batch_size={batch_size}"])
    with pytest.raises(ConfigError, match=r"invalid batch_size="):
        Trainer(parse(cfg), to_dict(cfg), two_ranks)


def test_the_final_train_accuracy_is_the_final_models(tmp_path: Path) -> None:
    # Issue 17: the report's gap came out -0.13: train accuracy was the epoch's running mean,
    # which lags the model. The final model is evaluated on the whole training set.
    t = trainer(tmp_path, "epochs=3")
    result = t.run()
    loss, accuracy = t.evaluate("train")
    assert (result["final_train_loss"], result["final_train_accuracy"]) == (loss, accuracy)
    assert result["diverged"] is None
    assert result["final_train_accuracy"] >= result["val_accuracy"] - 0.1


def test_a_run_that_blew_up_is_tagged_diverged(tmp_path: Path) -> None:
    # A learning rate far too large: the loss grows past a uniform guess's, or goes non-finite.
    t = trainer(tmp_path, "optimizer.lr=1000", "optimizer.momentum=0.99", "epochs=2")
    result = t.run()
    assert result["diverged"] is not None, result


@pytest.mark.parametrize(
    ("status", "loss", "accuracy", "diverged"),
    [
        ("completed", 0.3, 0.9, False),
        ("completed", 2.5, 0.5, True),  # above ln(10)
        ("completed", 1.0, 0.11, True),  # at chance
        ("diverged", 0.5, 0.9, True),
        ("completed", float("nan"), 0.9, True),
    ],
)
def test_divergence_rules(status: str, loss: float, accuracy: float, diverged: bool) -> None:
    assert (divergence(status, loss, accuracy, 10) is not None) == diverged
