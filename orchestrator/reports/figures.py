"""The report's figures, one function per figure, each drawn from a table of ``analysis.py``.

Figures are made with matplotlib's object API (``Figure``, no pyplot): no global state, no
display needed, safe in a server or a test; a notebook shows the returned figure as it is.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from matplotlib.figure import Figure

__all__ = ["batch_figure", "generalisation_figure", "pareto_figure", "scaling_figure"]

_COLORS = {"sgd": "tab:blue", "kfac": "tab:red"}
_LINES = {"sgd": "-", "kfac": "--"}
"""One line style per optimizer; in the scaling figure the colour tells the batch size apart."""
_BATCH_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
                 "tab:pink", "tab:gray", "tab:olive", "tab:cyan")  # fmt: skip


def _subplots(ncols: int = 1, *, figsize: tuple[float, float]) -> tuple[Figure, Any]:
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(1, ncols)


def _empty(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in this experiment", ha="center", va="center")
    ax.set_axis_off()


def scaling_figure(table: pd.DataFrame) -> Figure:
    """Throughput and parallel efficiency against nodes, a line per optimizer and batch: one
    colour per batch size, one line style per optimizer (SGD solid, K-FAC dashed)."""
    fig, (thr, eff) = _subplots(2, figsize=(10, 4))
    if table.empty:
        _empty(thr, "runs with throughput")
        _empty(eff, "runs with throughput")
        return fig
    sizes = sorted(set(table["batch_size"]))
    colour = {bs: _BATCH_COLORS[i % len(_BATCH_COLORS)] for i, bs in enumerate(sizes)}
    for (opt, model, bs), g in table.groupby(["optimizer", "model", "batch_size"]):
        label = f"{opt} {model} B={bs}"
        style = {
            "color": colour[bs],
            "ls": _LINES.get(str(opt), ":"),
            "marker": "o" if str(opt) == "sgd" else "s",
        }
        thr.plot(g["nodes"], g["samples_per_s"], label=label, **style)
        eff.plot(g["nodes"], g["efficiency"], label=label, **style)
    thr.set(xlabel="nodes", ylabel="samples / s", title="throughput", xscale="log", yscale="log")
    eff.set(xlabel="nodes", ylabel="efficiency", title="parallel efficiency (strong)")
    eff.set_xscale("log")
    ticks = sorted(set(table["nodes"]))
    for ax in (thr, eff):
        ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.minorticks_off()
    eff.axhline(1.0, color="grey", lw=0.8, ls=":")
    eff.set_ylim(0, 1.1)
    thr.legend(fontsize=7)
    return fig


def batch_figure(table: pd.DataFrame) -> Figure:
    """Steps and time to the target against batch size, log-log, a line per optimizer."""
    fig, (steps, secs) = _subplots(2, figsize=(10, 4))
    reached = table.dropna(subset=["steps_to_target"]) if not table.empty else table
    if reached.empty:
        _empty(steps, "run that reached its target")
        _empty(secs, "run that reached its target")
        return fig
    for opt, g in reached.groupby("optimizer"):
        style = {"color": _COLORS.get(str(opt)), "marker": "o", "label": str(opt)}
        steps.plot(g["batch_size"], g["steps_to_target"], **style)
        secs.plot(g["batch_size"], g["time_to_target_s"], **style)
    steps.set(xscale="log", yscale="log", xlabel="batch size", ylabel="steps to target")
    secs.set(xscale="log", yscale="log", xlabel="batch size", ylabel="training time to target (s)")
    steps.set_title("steps to target (Shallue et al. 2019)")
    secs.set_title("time to target")
    steps.legend()
    return fig


def generalisation_figure(table: pd.DataFrame) -> Figure:
    """Final train and validation accuracy, and their gap, against batch size."""
    fig, (acc, gap) = _subplots(2, figsize=(10, 4))
    if table.empty:
        _empty(acc, "finished runs")
        _empty(gap, "finished runs")
        return fig
    for opt, g in table.groupby("optimizer"):
        c = _COLORS.get(str(opt))
        acc.plot(
            g["batch_size"], g["train_accuracy"], color=c, ls="--", marker="o", label=f"{opt} train"
        )
        acc.plot(g["batch_size"], g["val_accuracy"], color=c, marker="s", label=f"{opt} val")
        gap.plot(g["batch_size"], g["gap"], color=c, marker="o", label=str(opt))
    acc.set(xscale="log", xlabel="batch size", ylabel="accuracy", title="final accuracy")
    gap.set(xscale="log", xlabel="batch size", ylabel="train - val", title="generalisation gap")
    gap.axhline(0.0, color="grey", lw=0.8, ls=":")
    acc.legend(fontsize=7)
    gap.legend()
    return fig


def pareto_figure(front: pd.DataFrame) -> Figure:
    """Validation accuracy against inference latency; the Pareto front joined by a line."""
    fig, ax = _subplots(figsize=(6, 4))
    if front.empty:
        _empty(ax, "NAS trials (runs with latency_ms)")
        return fig
    ax.scatter(front["latency_ms"], front["val_accuracy"], color="grey", label="trials")
    on = front[front["pareto"]].sort_values("latency_ms")
    ax.plot(on["latency_ms"], on["val_accuracy"], color="tab:green", marker="o", label="Pareto")
    for r in on.itertuples(index=False):
        ax.annotate(str(r.arch), (r.latency_ms, r.val_accuracy), fontsize=7)
    ax.set(xlabel="latency (ms per sample)", ylabel="validation accuracy", title="NAS front")
    ax.legend()
    return fig
