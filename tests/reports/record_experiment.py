"""Record a small real experiment into an MLflow store, in the layout sweeps use.

    python tests/reports/record_experiment.py OUT_DIR      # OUT_DIR/mlflow.db, OUT_DIR/artifacts

Really short training jobs (``sweeps.train.main``, MLP on scikit-learn digits), in experiment
``recorded``, under two sweep parent runs as the sweeps issue lays them out (tags ``orch.role``,
``orch.sweep_id``, ``orch.trial``; children nested by ``ORCH_PARENT_RUN_ID``):

- ``sweep-kfac_vs_sgd-...``: SGD and K-FAC at batch 64, 256 and 1,024 on one rank (in this
  process), and at batch 256 on two ranks (``torchrun``), each to a 95 % validation target;
- ``sweep-nas-...``: four ``param`` networks (conv and MLP, two sizes), each logging ``n_params``
  and ``latency_ms``.

The reports', notebooks' and MLflow UI tests generate it once per session (about a minute on
two idle cores); :func:`run_trial` is also what the performance-model test uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = "recorded"
#: The kfac_vs_sgd preset's settings (conf/experiment/kfac_vs_sgd.yaml), shortened.
BASE = [
    "model=mlp",
    "data=digits",
    "epochs=12",
    "target_accuracy=0.95",
    "eval_every_steps=10",
    "log_every_steps=5",
    "num_threads=1",
    "schedule.warmup_epochs=0.5",
    "schedule.base_batch_size=64",
    "optimizer.lr=0.05",
]
KFAC = ["optimizer.kfac.inverse_interval=5", "optimizer.kfac.damping=0.01"]
NAS = [
    ["model.kind=conv", "model.depth=1", "model.width=8", "model.kernel_sizes=3"],
    ["model.kind=conv", "model.depth=2", "model.width=16", "model.kernel_sizes=3"],
    ["model.kind=mlp", "model.depth=1", "model.width=16", "model.kernel_sizes=3"],
    ["model.kind=mlp", "model.depth=2", "model.width=64", "model.kernel_sizes=3"],
]


@dataclass(frozen=True)
class Recorded:
    """A recorded store: its folder and tracking URI, and the experiment's name."""

    folder: Path
    uri: str
    experiment: str = EXPERIMENT


def _env(parent: str, sweep: str, trial: int) -> dict[str, str]:
    return {"ORCH_PARENT_RUN_ID": parent, "ORCH_SWEEP_ID": sweep, "ORCH_TRIAL": str(trial)}


def run_trial(
    overrides: Sequence[str], *, uri: str, out: Path, ranks: int = 1, env: dict[str, str]
) -> dict[str, Any]:
    """One real training job; 1 rank in this process, more through ``torchrun``.

    Args:
        overrides: Hydra overrides (``tracking`` and ``checkpoint`` are added).
        uri: The tracking URI.
        out: Folder for checkpoints and logs.
        ranks: Data-parallel ranks.
        env: Extra environment (the parent run and trial variables).

    Returns:
        The job's result dict (its ``result: {...}`` line).
    """
    tag = uuid.uuid4().hex[:8]
    args = [
        *overrides,
        f"tracking.uri={uri}",
        f"tracking.experiment={EXPERIMENT}",
        f"checkpoint.path={out / 'ckpt' / tag}.pt",
    ]
    if ranks == 1:
        return _in_process(args, env)
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    cmd = [torchrun, "--standalone", f"--nproc_per_node={ranks}", "-m", "sweeps.train", *args]
    full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [*cmd, f"hydra.run.dir={out / 'hydra' / tag}", "hydra.output_subdir=null"],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("result: ")]
    return dict(json.loads(lines[-1].removeprefix("result: ")))


def _in_process(args: Sequence[str], env: dict[str, str]) -> dict[str, Any]:
    # One rank needs no torchrun: calling the job in this process saves the interpreter, torch
    # and MLflow start-up (seconds per job on a loaded machine).
    from sweeps.config import compose
    from sweeps.train import main

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return main(compose(list(args)))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _parent(client: Any, experiment_id: str, preset: str) -> tuple[str, str]:
    sweep = uuid.uuid4().hex[:8]
    run = client.create_run(
        experiment_id,
        run_name=f"sweep-{preset}-{sweep}",
        tags={
            "orch.role": "sweep",
            "orch.sweep_id": sweep,
            "orch.study": "",
            "orch.experiment": preset,
        },
    )
    return run.info.run_id, sweep


def _close_parent(client: Any, run_id: str, results: list[dict[str, Any]]) -> None:
    from mlflow.entities import Metric

    done = [r for r in results if r["status"] == "completed"]
    best = max((r["val_accuracy"] for r in done), default=0.0)
    metrics = {
        "n_trials": len(results),
        "n_complete": len(done),
        "n_pruned": 0,
        "n_failed": len(results) - len(done),
        "best_value": best,
    }
    client.log_batch(run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()])
    client.set_terminated(run_id, "FINISHED")


def record(out: Path) -> str:
    """Record the experiment under ``out``; returns the tracking URI."""
    from orchestrator.tracking import connect

    out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    client = connect(uri)
    found = client.get_experiment_by_name(EXPERIMENT)
    exp = (
        found.experiment_id
        if found
        else client.create_experiment(EXPERIMENT, artifact_location=(out / "artifacts").as_uri())
    )
    parent, sweep = _parent(client, exp, "kfac_vs_sgd")
    grid = [(opt, bs, 1) for bs in (64, 256, 1024) for opt in ("sgd", "kfac")]
    grid += [("sgd", 256, 2), ("kfac", 256, 2)]
    results = []
    for trial, (opt, bs, ranks) in enumerate(grid):
        extra = KFAC if opt == "kfac" else []
        over = [*BASE, f"optimizer={opt}", f"batch_size={bs}", *extra]
        results.append(
            run_trial(over, uri=uri, out=out, ranks=ranks, env=_env(parent, sweep, trial))
        )
    _close_parent(client, parent, results)

    parent, sweep = _parent(client, exp, "nas")
    results = []
    for trial, arch in enumerate(NAS):
        over = [*BASE, "model=param", "epochs=4", "target_accuracy=null", *arch]
        results.append(run_trial(over, uri=uri, out=out, env=_env(parent, sweep, trial)))
    _close_parent(client, parent, results)
    return uri


if __name__ == "__main__":
    print(record(Path(sys.argv[1])))
