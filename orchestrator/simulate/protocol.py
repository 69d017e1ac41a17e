"""RLScheduler's evaluation protocol (Zhang et al., SC20), so their table can be reproduced.

The mean bounded slowdown over 10 windows of 1,024 consecutive jobs, each replayed from an empty
cluster; window starts drawn at random (seed 1) from the first ``first`` jobs; job size =
max(allocated, requested processors); requested time = field 9, or the run time where missing.

Two variants (:data:`VARIANTS`):

* ``described`` (the default): the protocol as their paper and README describe it, on our event
  loop: windows drawn with numpy's ``default_rng(seed)``, all events of a time taken before one
  scheduling pass, WFP3 and UNICEP with the wait so far (``now - submit``).
* ``schedgym``: what their environment's code does (``HPCSimPickJobs.py``, ``job.py`` and
  ``compare-make-table.py`` of DIR-LAB/deep-batch-scheduler), which is what produced the
  published table; on ``lublin_256.swf`` it gives the published figures to the digit. Windows are
  drawn as gym's seeding draws them (a SHA-512 hash of the seed seeds numpy's legacy
  ``RandomState``; one ``randint(length, n - length - 1)`` a window); events are taken one at a
  time (an arrival, else one completion), each followed by a pass, so jobs are backfilled between
  completions of the same second; WFP3 and UNICEP see SchedGym's wait of a queued job, whose
  start time is still -1 (``w = -1 - submit``: both then favour early, long, wide jobs); jobs
  with a run time of 0 are dropped before windows are drawn, and a negative run time counts as
  10 s.

Both use :attr:`Backfill.STRICT` for "their backfilling" (a job must end strictly before the
head's earliest start) and keep a blocked head first until it starts (``commit_head``).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np

from orchestrator.resources.cluster import Cluster
from orchestrator.resources.request import JobRequest
from orchestrator.scheduling.policies import Backfill, BaseOrdering, make_ordering
from orchestrator.simulate.engine import simulate
from orchestrator.simulate.swf import SwfTrace
from orchestrator.simulate.workload import SkippedJob, WorkloadJob, workload_from_swf

__all__ = [
    "PUBLISHED_LUBLIN_256",
    "VARIANTS",
    "ProtocolRow",
    "protocol_ordering",
    "protocol_workloads",
    "replay_windows",
    "rlscheduler_protocol",
    "schedgym_jobs",
    "schedgym_rng",
    "window_starts",
]

Variant = Literal["described", "schedgym"]
VARIANTS: tuple[Variant, ...] = ("described", "schedgym")
WindowDraw = Literal["numpy", "schedgym"]

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


def schedgym_rng(seed: int) -> np.random.RandomState:
    """The generator gym's ``seeding.np_random(seed)`` returns (gym 0.15, as SchedGym used).

    The seed, reduced modulo 2**64, is written in decimal and hashed with SHA-512; the first 8
    bytes, read as a little-endian integer, become the seed words (32 bits each, least
    significant first, as many as the integer needs) of numpy's legacy ``RandomState``.
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    digest = hashlib.sha512(str(seed % 2**64).encode("utf-8")).digest()
    value = int.from_bytes(digest[:8], "little")
    words: list[int] = []
    while value > 0:
        value, word = divmod(value, 2**32)
        words.append(word)
    return np.random.RandomState(words or [0])


def window_starts(
    n_jobs: int,
    *,
    windows: int = 10,
    length: int = 1024,
    seed: int = 1,
    draw: WindowDraw = "numpy",
) -> list[int]:
    """Window start indices (0-based) into ``n_jobs`` jobs.

    ``numpy``: uniform in ``[0, n_jobs - length]`` from ``default_rng(seed)``. ``schedgym``: as
    their test script draws them: from :func:`schedgym_rng`, one ``randint(length, n_jobs -
    length - 1)`` a window, so starts lie in ``[length, n_jobs - length - 2]``.
    """
    if n_jobs < length:
        raise ValueError(f"need at least {length} jobs for a window, the trace has {n_jobs}")
    if draw == "schedgym":
        if n_jobs - length - 1 <= length:
            raise ValueError(
                f"SchedGym draws starts from [{length}, n - {length} - 1): "
                f"needs more than {2 * length + 1} jobs, the trace has {n_jobs}"
            )
        legacy = schedgym_rng(seed)
        return [int(legacy.randint(length, n_jobs - length - 1)) for _ in range(windows)]
    rng = np.random.default_rng(seed)
    return [int(s) for s in rng.integers(0, n_jobs - length + 1, size=windows)]


class _SchedGymWfp3(BaseOrdering):
    """WFP3 as SchedGym computes it: its wait is start - submit, and the start of a queued job is
    still -1, so ``w = -1 - s`` and the score ``((s + 1) / r)^3 * n`` is fixed at submission."""

    name = "wfp3"

    def score(self, request: JobRequest, now: float) -> float:
        wait = -1.0 - request.submit_time
        return -((wait / request.estimate) ** 3) * request.node_count


class _SchedGymUnicep(BaseOrdering):
    """UNICEP as SchedGym computes it: ``-(w + 1e-15) / (log2(n + 1e-15) * r)`` with the same
    ``w = -1 - s``; a one-processor job's log2 is about 1.6e-15, so it runs last."""

    name = "unicep"

    def score(self, request: JobRequest, now: float) -> float:
        wait = -1.0 - request.submit_time
        return -(wait + 1e-15) / (math.log2(request.node_count + 1e-15) * request.estimate)


def _schedgym_ordering(name: str, cluster: Cluster) -> BaseOrdering:
    if name == "wfp3":
        return _SchedGymWfp3()
    if name == "unicep":
        return _SchedGymUnicep()
    return make_ordering(name, cluster.size)


def schedgym_jobs(trace: SwfTrace) -> SwfTrace:
    """The trace as SchedGym loads it: run time 0 dropped, a negative run time counts as 10 s."""
    frame = trace.jobs
    frame = frame[frame["run"] != 0].copy()
    frame.loc[frame["run"] < 0, "run"] = 10.0
    return SwfTrace(path=trace.path, header=trace.header, jobs=frame.reset_index(drop=True))


def _is_lublin_256(trace: SwfTrace) -> bool:
    """Whether ``trace`` is the file their table was measured on (by its name: the shipped copy
    is gzipped, the one in ../shared/data/traces is not)."""
    return os.path.basename(trace.path).startswith("lublin_256.swf")


def protocol_workloads(
    trace: SwfTrace,
    cluster: Cluster,
    *,
    first: int | None = None,
    windows: int = 10,
    length: int = 1024,
    seed: int = 1,
    procs_per_node: int = 1,
    variant: Variant = "described",
) -> tuple[list[tuple[int, int]], list[tuple[list[WorkloadJob], list[SkippedJob]]]]:
    """The protocol's evaluation windows, as ``(start, length)`` pairs into the trace (after
    SchedGym's filtering for that variant), and each window's jobs and skipped jobs."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    schedgym = variant == "schedgym"
    if schedgym:
        trace = schedgym_jobs(trace)
    n = len(trace.jobs) if first is None else min(first, len(trace.jobs))
    starts = window_starts(
        n,
        windows=windows,
        length=length,
        seed=seed,
        draw="schedgym" if schedgym else "numpy",
    )
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
    return [(s, length) for s in starts], workloads


def replay_windows(
    cluster: Cluster,
    workloads: Sequence[tuple[Sequence[WorkloadJob], Sequence[SkippedJob]]],
    ordering: Callable[[], BaseOrdering],
    backfill: Backfill,
    *,
    variant: Variant = "described",
    progress: Callable[[], None] | None = None,
) -> tuple[list[float], list[float]]:
    """Each window replayed from an empty cluster as the protocol does (a fresh ordering from
    ``ordering()`` each time): the mean bounded slowdowns and utilizations, one per window."""
    bslds, utils = [], []
    for jobs, skipped in workloads:
        result = simulate(
            cluster,
            jobs,
            order=ordering(),
            backfill=backfill,
            skipped=skipped,
            commit_head=True,
            one_event_per_pass=variant == "schedgym",
        )
        bslds.append(result.metrics.mean_bsld)
        utils.append(result.metrics.utilization)
        if progress is not None:
            progress()
    return bslds, utils


def protocol_ordering(name: str, cluster: Cluster, variant: Variant) -> BaseOrdering:
    """A fresh ordering by name as the variant computes it (SchedGym's WFP3 and UNICEP there);
    names are those of :func:`make_ordering`, ``multifactor`` and ``tuned:FILE`` included."""
    if variant == "schedgym":
        return _schedgym_ordering(name, cluster)
    return make_ordering(name, cluster.size)


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
    variant: Variant = "described",
    progress: Callable[[int, int], None] | None = None,
) -> list[ProtocolRow]:
    """Run the protocol for every ordering and backfilling mode.

    Args:
        first: Draw windows from the first ``first`` jobs only (as they did for SDSC-SP2, HPC2N).
        orders: Ordering names (:func:`protocol_ordering`): the five of the table, and also
            ``multifactor`` or ``tuned:FILE``.
        variant: ``described`` or ``schedgym`` (see the module's docstring).
        progress: Called as ``progress(done, total)`` after each replayed window.
    """
    _, workloads = protocol_workloads(
        trace,
        cluster,
        first=first,
        windows=windows,
        length=length,
        seed=seed,
        procs_per_node=procs_per_node,
        variant=variant,
    )
    for order in orders:
        protocol_ordering(order, cluster, variant)  # a bad name fails before any replay
    # Their figures are for lublin_256.swf only: never shown beside another trace's.
    published = PUBLISHED_LUBLIN_256 if _is_lublin_256(trace) else {}
    rows = []
    total = len(orders) * len(backfills) * len(workloads)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    for order in orders:
        for backfill in backfills:
            bslds, utils = replay_windows(
                cluster,
                workloads,
                partial(protocol_ordering, order, cluster, variant),
                Backfill(backfill),
                variant=variant,
                progress=tick,
            )
            rows.append(
                ProtocolRow(
                    order=order,
                    backfill=Backfill(backfill).value,
                    mean_bsld=float(np.mean(bslds)),
                    utilization=float(np.mean(utils)),
                    published_bsld=published.get((order, Backfill(backfill).value)),
                )
            )
    return rows
