"""RLScheduler's evaluation protocol (Zhang et al., SC20), so their table can be reproduced.

The mean bounded slowdown over 10 windows of 1,024 consecutive jobs, each replayed from an empty
cluster; window starts drawn uniformly at random (seed 1) from the first ``first`` jobs; job size
= max(allocated, requested processors); requested time = field 9, or the run time where missing.
Their window draws come from their own random-number code, so the windows differ from theirs:
compare orders of magnitude and rankings, not digits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from orchestrator.resources.cluster import Cluster
from orchestrator.scheduling.policies import Backfill
from orchestrator.simulate.engine import simulate
from orchestrator.simulate.swf import SwfTrace
from orchestrator.simulate.workload import workload_from_swf

__all__ = ["PUBLISHED_LUBLIN_256", "ProtocolRow", "rlscheduler_protocol", "window_starts"]

PUBLISHED_LUBLIN_256: dict[tuple[str, str], float] = {
    ("fcfs", "none"): 7273.77,
    ("fcfs", "strict"): 235.82,
    ("sjf", "none"): 277.35,
    ("sjf", "strict"): 73.31,
    ("f1", "none"): 258.37,
    ("f1", "strict"): 75.07,
    ("wfp3", "none"): 19753.53,
    ("wfp3", "strict"): 133.87,
    ("unicep", "none"): 22274.74,
    ("unicep", "strict"): 307.23,
}
"""Their published mean bounded slowdowns on ``lublin_256.swf`` (traces README)."""

PROTOCOL_ORDERS: tuple[str, ...] = ("fcfs", "sjf", "f1", "wfp3", "unicep")
PROTOCOL_BACKFILLS: tuple[Backfill, ...] = (
    Backfill.NONE,
    Backfill.STRICT,
    Backfill.EASY,
    Backfill.CONSERVATIVE,
)


@dataclass(frozen=True)
class ProtocolRow:
    """One (ordering, backfilling) cell of the protocol table."""

    order: str
    backfill: str
    mean_bsld: float
    utilization: float
    published_bsld: float | None


def window_starts(
    n_jobs: int, *, windows: int = 10, length: int = 1024, seed: int = 1
) -> list[int]:
    """Window start indices drawn uniformly from ``[0, n_jobs - length]`` with ``seed``."""
    if n_jobs < length:
        raise ValueError(f"need at least {length} jobs for a window, the trace has {n_jobs}")
    rng = np.random.default_rng(seed)
    return [int(s) for s in rng.integers(0, n_jobs - length + 1, size=windows)]


def rlscheduler_protocol(
    trace: SwfTrace,
    cluster: Cluster,
    *,
    first: int | None = None,
    windows: int = 10,
    length: int = 1024,
    seed: int = 1,
    orders: Sequence[str] = PROTOCOL_ORDERS,
    backfills: Sequence[Backfill] = PROTOCOL_BACKFILLS,
    procs_per_node: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> list[ProtocolRow]:
    """Run the protocol for every ordering and backfilling mode.

    Args:
        first: Draw windows from the first ``first`` jobs only (as they did for SDSC-SP2, HPC2N).
        progress: Called as ``progress(done, total)`` after each replayed window.
    """
    n = len(trace.jobs) if first is None else min(first, len(trace.jobs))
    starts = window_starts(n, windows=windows, length=length, seed=seed)
    workloads = [
        workload_from_swf(
            trace,
            cluster,
            window=(s, length),
            procs_per_node=procs_per_node,
            estimate="requested",
            size_rule="max",
        )
        for s in starts
    ]
    rows = []
    total = len(orders) * len(backfills) * len(workloads)
    done = 0
    for order in orders:
        for backfill in backfills:
            bslds, utils = [], []
            for jobs, skipped in workloads:
                result = simulate(
                    cluster, jobs, order=order, backfill=backfill, skipped=skipped, commit_head=True
                )
                bslds.append(result.metrics.mean_bsld)
                utils.append(result.metrics.utilization)
                done += 1
                if progress is not None:
                    progress(done, total)
            rows.append(
                ProtocolRow(
                    order=order,
                    backfill=Backfill(backfill).value,
                    mean_bsld=float(np.mean(bslds)),
                    utilization=float(np.mean(utils)),
                    published_bsld=PUBLISHED_LUBLIN_256.get((order, Backfill(backfill).value)),
                )
            )
    return rows
