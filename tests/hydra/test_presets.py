"""The two experiment presets not run elsewhere, end to end and shrunk: ``batch_scaling`` (the
basic sweeper over optimiser x batch size, linear learning-rate scaling) and ``hpo`` (a pruned
Optuna search per optimiser in a shared Journal file), each trial a real training job of the
embedded scheduler logged under the sweep's MLflow parent run."""

from __future__ import annotations

from pathlib import Path

import optuna
from mlflow import MlflowClient
from optuna.trial import TrialState
from sweep_test_helpers import run, train_app

from sweeps.trial_link import open_storage


def _trials(db: Path, experiment: str) -> tuple[object, list[object]]:
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    (parent,) = client.search_runs([exp.experiment_id], "tags.`orch.role` = 'sweep'")
    children = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    return parent, children


def test_batch_scaling_preset(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    run(
        train_app(
            "experiment=batch_scaling",
            "optimizer=sgd,kfac",
            "batch_size=32,256",
            "epochs=1",
            "log_every_steps=2",
            f"tracking.uri=sqlite:///{db}",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ),
        tmp_path,
        timeout=600,
    )
    parent, children = _trials(db, "batch_scaling")
    assert parent.data.metrics["n_complete"] == 4  # type: ignore[attr-defined]
    client = MlflowClient(f"sqlite:///{db}")
    top_lr: dict[tuple[str, int], float] = {}
    for child in children:
        params = child.data.params  # type: ignore[attr-defined]
        key = (params["optimizer.name"], int(params["batch_size"]))
        history = client.get_metric_history(child.info.run_id, "lr")  # type: ignore[attr-defined]
        top_lr[key] = max(m.value for m in history)
        assert {"val_accuracy", "train_accuracy"} <= set(child.data.metrics)  # type: ignore[attr-defined]
    assert set(top_lr) == {(o, b) for o in ("sgd", "kfac") for b in (32, 256)}
    # The linear scaling rule: 8 times the batch, 8 times the learning rate (both runs one epoch
    # into the same warm-up measured in epochs; windows end on different steps, hence the slack).
    for optimizer in ("sgd", "kfac"):
        ratio = top_lr[(optimizer, 256)] / top_lr[(optimizer, 32)]
        assert 6 < ratio < 10, (optimizer, top_lr)


def test_hpo_preset_per_optimizer_study(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    journal = tmp_path / "hpo.journal"
    run(
        train_app(
            "experiment=hpo",
            "optimizer=kfac",
            "epochs=2",
            f"tracking.uri=sqlite:///{db}",
            f"hydra.sweeper.storage=journal:{journal}",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=2",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ),
        tmp_path,
        timeout=600,
    )
    study = optuna.load_study(study_name="hpo-kfac", storage=open_storage(f"journal:{journal}"))
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4
    for t in finished:
        assert set(t.params) == {
            "optimizer.lr",
            "optimizer.momentum",
            "optimizer.weight_decay",
            "batch_size",
        }
        assert t.intermediate_values  # reported val_accuracy during training (for pruning)
    parent, children = _trials(db, "hpo")
    assert parent.data.tags["orch.study"] == "hpo-kfac"  # type: ignore[attr-defined]
    assert len(children) == 4
