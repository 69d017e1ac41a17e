"""Figures of simulation results (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from orchestrator.simulate.engine import SimulationResult
from orchestrator.simulate.protocol import ProtocolRow

__all__ = ["plot_protocol", "plot_schedule"]


def plot_protocol(rows: Sequence[ProtocolRow], path: Path, title: str = "") -> Path:
    """Grouped bars of mean bounded slowdown per ordering and backfilling mode (log scale),
    with the published figures as black ticks where known."""
    orders = list(dict.fromkeys(r.order for r in rows))
    backfills = list(dict.fromkeys(r.backfill for r in rows))
    width = 0.8 / len(backfills)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = np.arange(len(orders))
    for k, backfill in enumerate(backfills):
        values = [
            next((r.mean_bsld for r in rows if r.order == o and r.backfill == backfill), np.nan)
            for o in orders
        ]
        pos = x + (k - (len(backfills) - 1) / 2) * width
        ax.bar(pos, values, width, label=f"backfill={backfill}")
        published = [
            next((r.published_bsld for r in rows if r.order == o and r.backfill == backfill), None)
            for o in orders
        ]
        for p, v in zip(pos, published, strict=True):
            if v is not None:
                ax.plot([p - width / 2, p + width / 2], [v, v], color="black", lw=2)
    ax.plot([], [], color="black", lw=2, label="published (RLScheduler, SC20)")
    ax.set_yscale("log")
    ax.set_xticks(x, orders)
    ax.set_ylabel("mean bounded slowdown (log)")
    ax.set_title(title or "RLScheduler protocol: 10 windows x 1,024 jobs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_schedule(result: SimulationResult, cluster_size: int, path: Path, title: str = "") -> Path:
    """Busy nodes over time and the distribution of waits, for one replay."""
    jobs = result.jobs
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6))
    if len(jobs):
        times = np.concatenate([jobs["start"].to_numpy(), jobs["end"].to_numpy()])
        deltas = np.concatenate([jobs["nodes"].to_numpy(), -jobs["nodes"].to_numpy()])
        order = np.argsort(times, kind="stable")
        t0 = float(jobs["submit"].min())
        hours = (times[order] - t0) / 3600.0
        top.step(hours, np.cumsum(deltas[order]) / cluster_size, where="post", lw=0.7)
        waits = jobs["wait"].to_numpy() / 3600.0
        bottom.hist(waits, bins=60, log=True)
    top.set_ylabel("busy share of nodes")
    top.set_xlabel("hours since first submission")
    top.set_ylim(0, 1.05)
    bottom.set_xlabel("wait (hours)")
    bottom.set_ylabel("jobs (log)")
    m = result.metrics
    fig.suptitle(
        title or f"{m.jobs} jobs: mean bsld {m.mean_bsld:.1f}, utilization {m.utilization:.1%}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
