"""Workloads for the simulator: jobs from SWF traces, and synthetic torus workloads.

A workload is a list of :class:`WorkloadJob` (a validated :class:`JobRequest` plus the job's real
run time), sorted by submit time. Jobs that can never run are not dropped silently: the
conversion returns them with the reason, and the simulator reports them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from orchestrator.exceptions import InvalidRequestError
from orchestrator.resources.cluster import Cluster
from orchestrator.resources.request import JobRequest, Shape, ShapeMode
from orchestrator.resources.topology import Torus3DTopology
from orchestrator.simulate.swf import SizeRule, SwfTrace

__all__ = [
    "SkippedJob",
    "WorkloadJob",
    "synthetic_torus_workload",
    "workload_from_swf",
]

EstimateRule = Literal["requested", "actual"]


@dataclass(frozen=True, slots=True)
class WorkloadJob:
    """One job to replay: what it asks for and how long it really runs."""

    job_id: int
    request: JobRequest
    run_time: float


@dataclass(frozen=True, slots=True)
class SkippedJob:
    """A job the simulator cannot replay, and why."""

    job_id: int
    reason: str


def workload_from_swf(
    trace: SwfTrace,
    cluster: Cluster,
    *,
    procs_per_node: int = 1,
    window: tuple[int, int] | None = None,
    estimate: EstimateRule = "requested",
    size_rule: SizeRule = "max",
) -> tuple[list[WorkloadJob], list[SkippedJob]]:
    """Turn trace rows into jobs for ``cluster``.

    Args:
        trace: The parsed trace.
        cluster: Target cluster; a job larger than it is skipped (and reported).
        procs_per_node: Processors of the trace per node of the cluster (nodes = ceil(p / ppn)).
        window: ``(start, length)``: only jobs ``start .. start + length - 1`` of the trace.
        estimate: ``requested``: the scheduler sees the requested time (field 9, or the run time
            where it is missing); ``actual``: it sees the real run time (a perfect estimate).
        size_rule: Which processor count is the job's size (see :meth:`SwfTrace.job_sizes`).

    Returns:
        ``(jobs, skipped)``; jobs sorted by submit time (then trace order).
    """
    if procs_per_node < 1:
        raise ValueError(f"procs_per_node must be >= 1, got {procs_per_node}")
    frame = trace.jobs
    sizes = trace.job_sizes(size_rule)
    if window is not None:
        start, length = window
        if start < 0 or length < 1 or start >= len(frame):
            raise ValueError(
                f"window {start}:{length} is outside the trace's {len(frame)} jobs "
                f"(for example --window 0:{min(len(frame), 1024)})"
            )
        frame = frame.iloc[start : start + length]
        sizes = sizes[start : start + length]
    ids = frame["job_id"].to_numpy()
    submits = frame["submit"].to_numpy()
    runs = frame["run"].to_numpy()
    req_times = frame["req_time"].to_numpy()
    users = frame["user"].to_numpy()
    jobs: list[WorkloadJob] = []
    skipped: list[SkippedJob] = []
    size = cluster.size
    for i in range(len(frame)):
        job_id = int(ids[i])
        submit, run, procs = submits[i], runs[i], sizes[i]
        if submit < 0:
            skipped.append(SkippedJob(job_id, "submit time missing (-1)"))
            continue
        if run < 0:
            skipped.append(SkippedJob(job_id, "run time missing (-1)"))
            continue
        if procs < 1:
            skipped.append(SkippedJob(job_id, "processor count missing (-1)"))
            continue
        nodes = math.ceil(procs / procs_per_node)
        if nodes > size:
            skipped.append(
                SkippedJob(job_id, f"needs {nodes} nodes, cluster {cluster.name!r} has {size}")
            )
            continue
        requested = req_times[i] if req_times[i] > 0 else max(run, 1.0)
        guess = requested if estimate == "requested" else max(run, 1.0)
        user = f"u{int(users[i])}" if users[i] >= 0 else "unknown"
        request = JobRequest(
            nodes=nodes,
            walltime_s=float(requested),
            estimate_s=float(guess),
            submit_time=float(submit),
            user=user,
        )
        jobs.append(WorkloadJob(job_id, request, float(run)))
    jobs.sort(key=lambda j: j.request.submit_time)
    return jobs, skipped


def synthetic_torus_workload(
    cluster: Cluster,
    n_jobs: int,
    *,
    seed: int = 0,
    load: float = 0.9,
    max_fraction: float = 1 / 16,
    mode_mix: tuple[float, float, float] = (0.7, 0.2, 0.1),
) -> list[WorkloadJob]:
    """A synthetic workload of shaped jobs for a torus cluster (SWF has no shapes).

    The distribution (documented in ``docs/simulation.md``):

    * mode: ``:torus`` / ``:mesh`` / node count (``:noncont``-like) with probabilities
      ``mode_mix``;
    * size: log2 of the node count uniform in ``[0, log2(max_fraction * nodes)]`` (many small
      jobs, few huge ones, as on production machines); a shape splits that exponent over the
      three axes with Dirichlet(1, 1, 1) weights, each extent clipped to the torus;
    * run time: log-uniform between 1 minute and 24 hours; requested time = run time x U(1, 3),
      rounded up to a minute (users overestimate);
    * arrivals: a Poisson process whose rate makes the offered load (node-seconds asked per
      node-second of machine) equal ``load``.

    Raises:
        ValueError: when the cluster is not a torus3d.
    """
    topo = cluster.topology
    if not isinstance(topo, Torus3DTopology):
        raise ValueError(f"synthetic torus workload needs a torus3d cluster, not {topo.kind}")
    rng = np.random.default_rng(seed)
    max_nodes = max(1.0, max_fraction * topo.size)
    modes = rng.choice(3, size=n_jobs, p=np.asarray(mode_mix) / sum(mode_mix))
    log_volume = rng.uniform(0.0, math.log2(max_nodes), size=n_jobs)
    splits = rng.dirichlet((1.0, 1.0, 1.0), size=n_jobs)
    runs = np.exp(rng.uniform(math.log(60.0), math.log(86400.0), size=n_jobs))
    requested = np.ceil(runs * rng.uniform(1.0, 3.0, size=n_jobs) / 60.0) * 60.0
    dims = topo.dims
    requests: list[tuple[Shape | None, int | None]] = []
    work = 0.0
    for i in range(n_jobs):
        if modes[i] == 2:
            n = max(1, round(2.0 ** log_volume[i]))
            requests.append((None, n))
            work += n * runs[i]
            continue
        extents = tuple(
            int(min(d, max(1, round(2.0 ** (log_volume[i] * splits[i, a])))))
            for a, d in enumerate(dims)
        )
        mode = ShapeMode.TORUS if modes[i] == 0 else ShapeMode.MESH
        box = Shape(extents, mode)
        requests.append((box, None))
        work += box.volume * runs[i]
    mean_gap = work / (load * topo.size * n_jobs)
    submits = np.cumsum(rng.exponential(mean_gap, size=n_jobs))
    jobs = []
    for i, (shape, n) in enumerate(requests):
        try:
            request = JobRequest(
                nodes=n,
                shape=shape,
                walltime_s=float(requested[i]),
                submit_time=float(submits[i]),
                user=f"u{int(rng.integers(0, 50))}",
            )
            cluster.check_request(request)
        except InvalidRequestError:  # pragma: no cover - extents are clipped to the torus
            continue
        jobs.append(WorkloadJob(i + 1, request, float(runs[i])))
    return jobs
