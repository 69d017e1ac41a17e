"""Kill-and-resume: a real ``python -m sweeps.train`` process, SIGTERM, then the same command."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from sweeps.checkpoint import PreemptionFlag, load_checkpoint, save_checkpoint
from sweeps.train import EXIT_PREEMPTED


def command(tmp: Path, name: str, db: Path) -> list[str]:
    return [
        sys.executable, "-m", "sweeps.train",
        "data=synthetic", "data.num_samples=1200", "model.hidden=[48]",
        "optimizer=kfac", "optimizer.lr=0.05", "optimizer.kfac.inverse_interval=5",
        "schedule=step", "batch_size=32", "max_steps=300", "log_every_steps=5",
        "num_threads=1", "seed=3",
        f"tracking.uri=sqlite:///{db}", "tracking.experiment=resume",
        f"checkpoint.path={tmp / name}.pt", f"hydra.run.dir={tmp / name}-hydra",
    ]  # fmt: skip


def run_to_end(args: list[str]) -> dict[str, object]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("result: ")][-1]
    return dict(json.loads(line.removeprefix("result: ")))


def test_sigterm_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    db = tmp_path / "mlflow.db"
    whole = run_to_end(command(tmp_path, "whole", db))

    args = command(tmp_path, "cut", db)
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("step=") and int(line.split()[0].split("=")[1]) >= 40:
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    stopped = load_checkpoint(tmp_path / "cut.pt")
    assert 40 <= stopped["step"] < 300
    assert stopped["kfac"]["layers"]["1"]["a_inv"] is not None  # K-FAC inverses are saved
    runs = MlflowClient(f"sqlite:///{db}").search_runs(
        [MlflowClient(f"sqlite:///{db}").get_experiment_by_name("resume").experiment_id]
    )
    cut_run = next(r for r in runs if r.info.run_id == stopped["run_id"])
    assert cut_run.info.status == "KILLED"

    resumed = run_to_end(args)
    assert not (tmp_path / "cut.pt").exists()  # a finished job leaves no checkpoint to resume
    assert resumed["run_id"] == stopped["run_id"]
    assert resumed["steps"] == whole["steps"] == 300
    for key in ("val_loss", "val_accuracy", "train_loss", "train_accuracy", "best_val_accuracy"):
        assert resumed[key] == whole[key], key  # bit for bit: same batches, same RNG, same state

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("resume")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2  # "whole" and "cut": resuming made no new run
    run = client.get_run(stopped["run_id"])
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    steps = [m.step for m in history]
    assert len(steps) == len(set(steps))  # no epoch logged twice across the cut
    assert max(steps) == 300 and min(steps) < stopped["step"]
    # Per-epoch metrics, including the epoch cut in two, match the uninterrupted run's.
    for key in ("train_loss", "train_accuracy", "val_loss"):
        cut_history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        whole_history = {
            m.step: m.value for m in client.get_metric_history(str(whole["run_id"]), key)
        }
        assert cut_history == whole_history, key


def test_checkpoint_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"x": torch.ones(3)})

    class Boom:
        def __reduce__(self) -> tuple[object, ...]:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"x": torch.zeros(3), "bad": Boom()})
    assert torch.equal(load_checkpoint(path)["x"], torch.ones(3))  # the old one survives whole
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left behind


def test_sigusr1_and_sigterm_are_caught_then_handlers_restored() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    for sig in (signal.SIGUSR1, signal.SIGTERM):
        with PreemptionFlag() as flag:
            assert flag.received is None
            os.kill(os.getpid(), sig)
            assert flag.received == sig
    assert {s: signal.getsignal(s) for s in before} == before


def launch_two_ranks(args: list[str], port: int) -> list[subprocess.Popen[str]]:
    procs = []
    for rank in range(2):
        env = os.environ | {
            "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
        }  # fmt: skip
        procs.append(
            subprocess.Popen(
                args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
        )
    return procs


def result_of(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    line = [x for x in out.splitlines() if x.startswith("result: ")][-1]
    return dict(json.loads(line.removeprefix("result: ")))


def test_signal_to_one_rank_stops_both_and_two_rank_resume_equals_uninterrupted(
    tmp_path: Path,
) -> None:
    db = tmp_path / "mlflow.db"
    extra = ["data.num_samples=800", "batch_size=40", "max_steps=120"]
    # The uninterrupted pair runs alongside the one that gets cut (independent jobs).
    whole_procs = launch_two_ranks([*command(tmp_path, "whole2", db), *extra], free_port())
    args = [*command(tmp_path, "cut2", db), *extra]
    procs = launch_two_ranks(args, free_port())
    assert procs[0].stdout is not None
    for line in procs[0].stdout:
        if line.startswith("step=") and int(line.split()[0].split("=")[1]) >= 30:
            procs[1].send_signal(signal.SIGTERM)  # rank 1 only: rank 0 must stop at the same step
            break
    for p in procs:
        p.communicate(timeout=120)
        assert p.returncode == EXIT_PREEMPTED
    stopped = load_checkpoint(tmp_path / "cut2.pt")
    assert 30 <= stopped["step"] < 120 and len(stopped["kfac_generators"]) == 2
    whole = result_of(whole_procs[0])
    assert whole_procs[1].wait(timeout=60) == 0 and whole["world_size"] == 2

    procs = launch_two_ranks(args, free_port())
    resumed = result_of(procs[0])
    _, rank1_err = procs[1].communicate(timeout=60)
    assert procs[1].returncode == 0, rank1_err[-3000:]
    assert resumed["run_id"] == stopped["run_id"] and resumed["steps"] == 120
    for key in ("val_loss", "val_accuracy", "train_loss", "train_accuracy"):
        assert resumed[key] == pytest.approx(whole[key], rel=1e-9, abs=1e-12), key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
