"""Training jobs against a real MLflow server, and data-parallel jobs under ``torchrun``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from orchestrator.tracking import BatchedLogger, env_tags, flatten_params, start_or_resume_run
from sweeps.config import compose
from sweeps.train import main

ORCH_ENV = {
    "ORCH_CLUSTER": "slurm16",
    "ORCH_JOB_ID": "4242",
    "ORCH_NUM_NODES": "2",
    "ORCH_NODELIST": "n[01-02]",
}


def test_training_run_logs_config_metrics_and_tags_to_a_server(
    mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in ORCH_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)
    cfg = compose(
        [
            "optimizer=kfac", "model.hidden=[32]", "epochs=3", "log_every_steps=4",
            "num_threads=1", f"tracking.uri={mlflow_server}", "tracking.experiment=server",
        ]
    )  # fmt: skip
    result = main(cfg)
    assert result["status"] == "completed" and result["steps"] == 3 * 11
    client = MlflowClient(mlflow_server)
    run = client.get_run(str(result["run_id"]))
    assert run.info.status == "FINISHED"
    # The whole resolved config, flattened.
    assert run.data.params["optimizer.kfac.inverse_interval"] == "10"
    assert run.data.params["model.hidden"] == "[32]"
    assert run.data.params["data.name"] == "digits"
    assert {k: run.data.tags[k] for k in ("cluster", "job_id", "nodes", "block", "optimizer")} == {
        "cluster": "slurm16", "job_id": "4242", "nodes": "2", "block": "n[01-02]",
        "optimizer": "kfac",
    }  # fmt: skip
    epochs = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in epochs] == [11, 22, 33]
    assert [m.value for m in epochs][-1] == pytest.approx(result["val_accuracy"])
    for key in ("train_loss", "train_accuracy", "val_loss"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 3
    windows = client.get_metric_history(run.info.run_id, "samples_per_sec")
    assert [m.step for m in windows] == [4, 8, 12, 16, 20, 24, 28, 32]
    for phase in ("forward", "backward", "curvature", "inverse", "communication", "update"):
        assert len(client.get_metric_history(run.info.run_id, f"time_{phase}_ms")) == 8
    curvature = client.get_metric_history(run.info.run_id, "time_curvature_ms")
    assert all(m.value > 0 for m in curvature)  # K-FAC's own work is measured, not lumped in
    # Batched: params in 100s, one call per window and per epoch, the status tag, the final
    # metrics; never one call per metric.
    params = len(flatten_params(dict(run.data.params)))
    assert result["log_batch_calls"] == -(-params // 100) + 8 + 3 + 1 + 1
    assert run.data.tags["status"] == "completed"


def test_batched_logger_sends_one_call_per_thousand_metrics(mlflow_server: str) -> None:
    client = MlflowClient(mlflow_server)
    run_id = start_or_resume_run(client, "batched", "b", {"optimizer": "sgd"})
    logger = BatchedLogger(client, run_id)
    for step in range(250):
        logger.log_metrics({"a": step, "b": 2 * step, "c": 0.5, "d": -step}, step)
    assert logger.calls == 0 and logger.pending == 1000
    logger.log_metrics({"e": 1.0}, 0)
    logger.finish()
    assert logger.calls == 2  # 1,001 metrics: 1,000 then 1 (set_terminated is not a batch)
    history = client.get_metric_history(run_id, "b")
    assert sorted(m.value for m in history) == [2.0 * s for s in range(250)]
    assert start_or_resume_run(client, "batched", "b2", {}, run_id=run_id) == run_id
    assert client.get_run(run_id).info.status == "RUNNING"


def test_env_tags_only_for_variables_that_are_set() -> None:
    assert env_tags(ORCH_ENV | {"OTHER": "x"}) == {
        "cluster": "slurm16", "job_id": "4242", "nodes": "2", "block": "n[01-02]"
    }  # fmt: skip
    assert env_tags({"ORCH_CLUSTER": ""}) == {}


def test_torchrun_two_ranks_match_one_rank_and_only_rank0_logs(tmp_path: Path) -> None:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None
    db = tmp_path / "mlflow.db"
    common = [
        "data=synthetic", "data.num_samples=600", "model=cnn", "model.channels=[4]",
        "model.hidden=16", "optimizer=kfac", "optimizer.kfac.fisher=empirical",
        "batch_size=40", "epochs=2", "num_threads=1", f"tracking.uri=sqlite:///{db}",
        "tracking.experiment=dp",
    ]  # fmt: skip
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    results = []
    for n, extra in ((1, []), (2, [])):
        args = [
            torchrun, "--standalone", f"--nproc_per_node={n}", "-m", "sweeps.train",
            *common, *extra, f"checkpoint.path={tmp_path / str(n)}.pt",
            f"hydra.run.dir={tmp_path / str(n)}",
        ]  # fmt: skip
        done = subprocess.run(
            args, capture_output=True, text=True, env=env, timeout=240, check=False
        )
        assert done.returncode == 0, done.stderr[-3000:]
        lines = [x for x in done.stdout.splitlines() if x.startswith("result: ")]
        assert len(lines) == 1  # rank 0 alone reports
        results.append(json.loads(lines[0].removeprefix("result: ")))
    one, two = results
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-4)
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("dp")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["world_size"] for r in runs) == ["1", "2"]  # one run per job


def test_background_logger_raises_the_workers_error(mlflow_server: str) -> None:
    client = MlflowClient(mlflow_server)
    run_id = start_or_resume_run(client, "batched", "errors", {})
    logger = BatchedLogger(client, run_id)
    logger.log_metrics({"ok": 1.0}, 0)
    logger.flush()
    logger.log_metrics({"x" * 1000: 1.0}, 1)  # MLflow refuses keys over 250 characters
    logger.flush()
    with pytest.raises(MlflowException):
        logger.finish()
    assert [m.value for m in client.get_metric_history(run_id, "ok")] == [1.0]


def test_crashed_job_marks_its_run_failed(
    mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # The periodic checkpoint at step 2 cannot be written (its folder is a file): a crash in
    # the middle of training, with the run open.
    (tmp_path / "not-a-folder").write_text("")
    cfg = compose(
        [
            "max_steps=6", "num_threads=1", f"tracking.uri={mlflow_server}",
            "tracking.experiment=crash", "checkpoint.every_steps=2",
            f"checkpoint.path={tmp_path / 'not-a-folder' / 'ckpt.pt'}",
        ]
    )  # fmt: skip
    with pytest.raises(OSError):
        main(cfg)
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("crash")
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED"
