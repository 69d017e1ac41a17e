"""From MLflow runs to the tables a scaling and generalisation study compares.

Runs are read with one ``search_runs`` call into a pandas frame with MLflow's own column names
(``run_id``, ``status``, ``params.batch_size``, ``metrics.val_accuracy``, ``tags.orch.role``...),
so a notebook can use the same frame. The tables are pure functions of that frame.

Sweeps lay runs out as one parent per sweep (``tags.orch.role == "sweep"``) and one nested child
per trial (``sweeps/train.py`` tags it ``orch.role=trial``); a job run by hand has neither tag
and counts as a trial too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from orchestrator.tracking import connect, default_tracking_uri

__all__ = [
    "batch_table",
    "best_table",
    "diverged_runs",
    "generalisation_table",
    "is_nas",
    "load_runs",
    "pareto_front",
    "scaling_table",
    "sweep_parents",
    "trials",
    "verdict_sentence",
    "verdict_table",
]


def load_runs(experiment: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """Every run of an experiment, one row each, MLflow's column names.

    Args:
        experiment: Experiment name.
        tracking_uri: A local store or loopback server; default ``sqlite:///<cwd>/mlflow.db``.

    Returns:
        The frame; metric columns hold each metric's last value.

    Raises:
        LookupError: When the experiment does not exist (the message lists those that do).
    """
    client = connect(tracking_uri or default_tracking_uri())
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise LookupError(
            f"no experiment {experiment!r} in the tracking store; it has: {', '.join(names)}"
        )
    return runs_frame(client, [found.experiment_id])


def runs_frame(client: MlflowClient, experiment_ids: list[str]) -> pd.DataFrame:
    """The runs of the experiments as a frame (``mlflow.search_runs``' layout)."""
    rows = []
    for run in client.search_runs(experiment_ids, max_results=50_000):
        row: dict[str, object] = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "start_time": pd.to_datetime(run.info.start_time, unit="ms"),
            "experiment_id": run.info.experiment_id,
        }
        row |= {f"params.{k}": v for k, v in run.data.params.items()}
        row |= {f"metrics.{k}": v for k, v in run.data.metrics.items()}
        row |= {f"tags.{k}": v for k, v in run.data.tags.items()}
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["run_id", "run_name", "status", "start_time"])
    return frame


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df.columns:
        return df[name]
    return pd.Series([np.nan] * len(df), index=df.index, dtype=float)


def sweep_parents(df: pd.DataFrame) -> pd.DataFrame:
    """The sweeps' parent runs, newest first."""
    parents = df[_col(df, "tags.orch.role") == "sweep"]
    return parents.sort_values("start_time", ascending=False)


def trials(df: pd.DataFrame) -> pd.DataFrame:
    """Finished training runs, with typed ``optimizer``, ``batch_size``, ``nodes`` columns.

    ``nodes`` is the job's node count when a backend set it (``tags.nodes``), else its world
    size (one rank per node).
    """
    t = df[(_col(df, "tags.orch.role") != "sweep") & (df["status"] == "FINISHED")].copy()
    t = t[_col(t, "params.batch_size").notna()]
    t["optimizer"] = _col(t, "params.optimizer.name").fillna(_col(t, "tags.optimizer"))
    t["batch_size"] = pd.to_numeric(_col(t, "params.batch_size")).astype(int)
    world = pd.to_numeric(_col(t, "tags.world_size")).fillna(1)
    t["nodes"] = pd.to_numeric(_col(t, "tags.nodes")).fillna(world).astype(int)
    t["model"] = _col(t, "params.model.name").astype(str)
    # The preset of the sweep a trial belongs to (its parent's orch.experiment tag), so NAS
    # trials are told apart from the optimizer comparison's.
    parents = df[_col(df, "tags.orch.role") == "sweep"]
    preset = dict(zip(parents["run_id"], _col(parents, "tags.orch.experiment"), strict=True))
    t["sweep"] = [preset.get(p, "") for p in _col(t, "tags.mlflow.parentRunId")]
    arch = [_col(t, f"params.model.{k}").astype(str) for k in ("kind", "depth", "width")]
    t["arch"] = np.where(
        t["model"] == "param", arch[0] + " d" + arch[1] + " w" + arch[2], t["model"]
    )
    return t


def is_nas(t: pd.DataFrame) -> pd.Series:
    """Trials of a NAS sweep: the sweep's preset is ``nas``, or (no sweep) the ``param`` net."""
    return (t["sweep"] == "nas") | ((t["sweep"] == "") & (t["model"] == "param"))


def scaling_table(t: pd.DataFrame) -> pd.DataFrame:
    """Throughput and parallel efficiency against nodes, per optimizer and global batch.

    Efficiency is strong-scaling: ``throughput(N) / (N * throughput(1))`` at the same global
    batch, optimizer and model (NaN without a 1-node run to compare with).
    """
    t = t[~is_nas(t)] if not t.empty else t
    if t.empty or "metrics.samples_per_sec" not in t.columns:
        return pd.DataFrame(
            columns=["optimizer", "model", "batch_size", "nodes", "samples_per_s", "efficiency"]
        )
    g = (
        t.groupby(["optimizer", "model", "batch_size", "nodes"], as_index=False)
        .agg(samples_per_s=("metrics.samples_per_sec", "median"), runs=("run_id", "count"))
        .sort_values(["optimizer", "model", "batch_size", "nodes"])
    )
    one = g[g["nodes"] == 1].set_index(["optimizer", "model", "batch_size"])["samples_per_s"]
    base = [
        one.get((r.optimizer, r.model, r.batch_size), math.nan) for r in g.itertuples(index=False)
    ]
    g["efficiency"] = g["samples_per_s"] / (g["nodes"] * np.asarray(base, dtype=float))
    return g.reset_index(drop=True)


def batch_table(t: pd.DataFrame) -> pd.DataFrame:
    """Steps and time to the target accuracy against batch size, per optimizer (Shallue et al.).

    Runs that never reached the target are counted in ``runs`` but not in the medians.
    """
    t = t[~is_nas(t)] if not t.empty else t
    cols = ["optimizer", "batch_size", "steps_to_target", "time_to_target_s", "reached", "runs"]
    if t.empty:
        return pd.DataFrame(columns=cols)
    t = t.assign(
        steps=pd.to_numeric(_col(t, "metrics.steps_to_target")),
        time=pd.to_numeric(_col(t, "metrics.time_to_target_s")),
    )
    g = t.groupby(["optimizer", "batch_size"], as_index=False).agg(
        steps_to_target=("steps", "median"),
        time_to_target_s=("time", "median"),
        reached=("steps", "count"),
        runs=("run_id", "count"),
    )
    return g[cols].sort_values(["optimizer", "batch_size"]).reset_index(drop=True)


def verdict_table(batch: pd.DataFrame) -> pd.DataFrame:
    """Per batch size, which optimizer reached the target first, from a :func:`batch_table`.

    Columns: the batch size; per optimizer the median steps and seconds to the target (NaN:
    none of its runs reached it); ``faster``, the optimizer with the shorter time (or the only
    one that got there; empty when none did); ``steps_ratio`` and ``time_ratio``, the slower's
    over the faster's (NaN unless both reached it).
    """
    cols = ["batch_size", "faster", "steps_ratio", "time_ratio"]
    if batch.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    optimizers = sorted(set(batch["optimizer"]))
    for size, g in batch.groupby("batch_size"):
        by = g.set_index("optimizer")
        row: dict[str, Any] = {"batch_size": int(str(size))}
        for opt in optimizers:
            row[f"{opt}_steps"] = by["steps_to_target"].get(opt, math.nan)
            row[f"{opt}_s"] = by["time_to_target_s"].get(opt, math.nan)
        reached = {o: row[f"{o}_s"] for o in optimizers if not math.isnan(row[f"{o}_s"])}
        row["faster"] = min(reached, key=lambda o: reached[o]) if reached else ""
        row["steps_ratio"] = row["time_ratio"] = math.nan
        if len(reached) >= 2:
            fast = row["faster"]
            slow = max(reached, key=lambda o: reached[o])
            row["steps_ratio"] = row[f"{slow}_steps"] / row[f"{fast}_steps"]
            row["time_ratio"] = row[f"{slow}_s"] / row[f"{fast}_s"]
        rows.append(row)
    table = pd.DataFrame(rows)
    per_opt = [c for c in table.columns if c not in cols]
    return table[["batch_size", *per_opt, "faster", "steps_ratio", "time_ratio"]]


def verdict_sentence(verdict: pd.DataFrame) -> str:
    """The sentence a reader would write from a :func:`verdict_table`."""
    if verdict.empty:
        return "No run reached its target accuracy, so no optimizer can be called faster."
    wins = verdict[verdict["faster"] != ""].groupby("faster")["batch_size"].apply(list)
    if wins.empty:
        return "No run reached its target accuracy, so no optimizer can be called faster."
    parts = []
    for opt, sizes in wins.items():
        ratios = verdict[(verdict["faster"] == opt)]["time_ratio"].dropna()
        how = f" ({ratios.median():.2g}x faster in median)" if not ratios.empty else ""
        listed = ", ".join(f"{s:,}" for s in sizes)
        name = {"kfac": "K-FAC", "sgd": "SGD"}.get(str(opt), str(opt))
        parts.append(f"{name} reached the target first at batch {listed}{how}")
    missing = verdict[verdict["faster"] == ""]["batch_size"].tolist()
    tail = f"; at batch {', '.join(f'{s:,}' for s in missing)} no run reached it" if missing else ""
    return "; ".join(parts) + tail + "."


def generalisation_table(t: pd.DataFrame) -> pd.DataFrame:
    """Final train and validation accuracy, and their gap, against batch size per optimizer.

    Train accuracy is the final model's on the whole training set (``final_train_accuracy``,
    logged at the end of a run), not the last epoch's running mean, which lags the model and
    made the gap negative; runs tagged ``diverged`` are left out (see :func:`diverged_runs`).
    """
    t = t[~is_nas(t)] if not t.empty else t
    cols = ["optimizer", "batch_size", "train_accuracy", "val_accuracy", "gap", "runs"]
    if t.empty:
        return pd.DataFrame(columns=cols)
    t = t[_col(t, "tags.diverged").isna()]
    if t.empty:
        return pd.DataFrame(columns=cols)
    val = _col(t, "metrics.final_val_accuracy").fillna(_col(t, "metrics.val_accuracy"))
    train = _col(t, "metrics.final_train_accuracy").fillna(_col(t, "metrics.train_accuracy"))
    t = t.assign(train=pd.to_numeric(train), val=val)
    g = t.groupby(["optimizer", "batch_size"], as_index=False).agg(
        train_accuracy=("train", "median"), val_accuracy=("val", "median"), runs=("run_id", "count")
    )
    g["gap"] = g["train_accuracy"] - g["val_accuracy"]
    return g[cols].sort_values(["optimizer", "batch_size"]).reset_index(drop=True)


def diverged_runs(t: pd.DataFrame) -> pd.DataFrame:
    """The trials the training job tagged ``diverged``, with why (``tags.diverged``)."""
    cols = ["optimizer", "batch_size", "val_accuracy", "why", "run_id"]
    t = t[~is_nas(t)] if not t.empty else t
    if t.empty:
        return pd.DataFrame(columns=cols)
    d = t[_col(t, "tags.diverged").notna()]
    val = _col(d, "metrics.final_val_accuracy").fillna(_col(d, "metrics.val_accuracy"))
    d = d.assign(val_accuracy=val, why=_col(d, "tags.diverged"))
    return d[cols].sort_values(["optimizer", "batch_size"]).reset_index(drop=True)


def pareto_front(t: pd.DataFrame) -> pd.DataFrame:
    """NAS trials (those that logged ``latency_ms``) with a ``pareto`` column.

    A trial is on the front when no other trial is at least as accurate and at least as fast
    and strictly better in one of the two.
    """
    cols = ["run_name", "arch", "val_accuracy", "latency_ms", "n_params", "pareto"]
    if t.empty or "metrics.latency_ms" not in t.columns:
        return pd.DataFrame(columns=cols)
    val = _col(t, "metrics.final_val_accuracy").fillna(_col(t, "metrics.val_accuracy"))
    n = t.assign(
        val_accuracy=val,
        latency_ms=_col(t, "metrics.latency_ms"),
        n_params=_col(t, "metrics.n_params"),
    )
    n = n[n["latency_ms"].notna() & n["val_accuracy"].notna() & is_nas(n)]
    acc, lat = n["val_accuracy"].to_numpy(), n["latency_ms"].to_numpy()
    front = [
        not np.any((acc >= a) & (lat <= b) & ((acc > a) | (lat < b)))
        for a, b in zip(acc, lat, strict=True)
    ]
    n = n.assign(pareto=front)
    return n[cols].sort_values("latency_ms").reset_index(drop=True)


def best_table(t: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The best configurations: highest validation accuracy, then least time to target."""
    cols = [
        "run_name",
        "optimizer",
        "arch",
        "batch_size",
        "nodes",
        "val_accuracy",
        "time_to_target_s",
        "samples_per_s",
    ]
    if t.empty:
        return pd.DataFrame(columns=cols)
    b = t.assign(
        val_accuracy=_col(t, "metrics.final_val_accuracy").fillna(_col(t, "metrics.val_accuracy")),
        time_to_target_s=_col(t, "metrics.time_to_target_s"),
        samples_per_s=_col(t, "metrics.samples_per_sec"),
    )
    b = b.sort_values(["val_accuracy", "time_to_target_s"], ascending=[False, True])
    return b[cols].head(top).reset_index(drop=True)
