"""Summary metrics of a simulated schedule."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

__all__ = ["BSLD_TAU_S", "SimulationMetrics", "bounded_slowdown", "compute_metrics"]

BSLD_TAU_S = 10.0
"""Bounded slowdown's threshold: run times under 10 s count as 10 s."""


def bounded_slowdown(wait: float, run: float, tau: float = BSLD_TAU_S) -> float:
    """``max((wait + run) / max(run, tau), 1)``.

    >>> bounded_slowdown(90.0, 10.0)
    10.0
    >>> bounded_slowdown(0.0, 1.0)
    1.0
    """
    return max((wait + run) / max(run, tau), 1.0)


@dataclass(frozen=True)
class SimulationMetrics:
    """What one replay measured.

    Attributes:
        jobs: Jobs replayed.
        mean_wait_s: Mean wait (start - submit).
        p95_wait_s: 95th percentile of the wait.
        mean_bsld: Mean bounded slowdown (tau = 10 s).
        utilization: Node-seconds used / (nodes x makespan); on a cluster that shares nodes a
            job's nodes count by the part of their GPUs (cores, without GPUs) it holds.
        makespan_s: Last end - first submit.
        wall_s: Wall-clock seconds the replay took.
        jobs_per_s: Jobs replayed per wall-clock second.
        killed: Jobs ended at their walltime.
        fragmentation: Tree/torus only: the time-averaged share of the machine that was free
            while the head job could not start although that many free nodes would hold it
            (free nodes that cannot hold the head job). None on flat clusters.
    """

    jobs: int
    mean_wait_s: float
    p95_wait_s: float
    mean_bsld: float
    utilization: float
    makespan_s: float
    wall_s: float
    jobs_per_s: float
    killed: int
    fragmentation: float | None = None

    def as_dict(self) -> dict[str, float | int | str | None]:
        return dict(asdict(self))


def compute_metrics(
    jobs: pd.DataFrame,
    cluster_size: int,
    *,
    wall_s: float,
    fragmented_node_seconds: float | None = None,
) -> SimulationMetrics:
    """Metrics from the per-job records of a replay."""
    n = len(jobs)
    if n == 0:
        return SimulationMetrics(0, 0.0, 0.0, 0.0, 0.0, 0.0, wall_s, 0.0, 0, None)
    makespan = float(jobs["end"].max() - jobs["submit"].min())
    # On a cluster that shares nodes a job holds parts of nodes (``node_share``, in nodes).
    held = jobs["node_share"] if "node_share" in jobs else jobs["nodes"]
    used = float((held * jobs["run"]).sum())
    utilization = used / (cluster_size * makespan) if makespan > 0 else 0.0
    frag = None
    if fragmented_node_seconds is not None:
        frag = fragmented_node_seconds / (cluster_size * makespan) if makespan > 0 else 0.0
    wait = jobs["wait"].to_numpy()
    return SimulationMetrics(
        jobs=n,
        mean_wait_s=float(wait.mean()),
        p95_wait_s=float(np.percentile(wait, 95)),
        mean_bsld=float(jobs["bsld"].mean()),
        utilization=utilization,
        makespan_s=makespan,
        wall_s=wall_s,
        jobs_per_s=n / wall_s if wall_s > 0 else math.inf,
        killed=int(jobs["killed"].sum()),
        fragmentation=frag,
    )
