"""Step time of data-parallel SGD and K-FAC on N nodes: compute plus alpha-beta communication.

One step of our training job (``sweeps/train.py``) on each of ``p`` ranks, per-rank batch
``b``:

- compute: ``overhead + b * train_flops_per_sample / rate`` plus SGD's update;
- an all-reduce of the gradients (float32, every step) and of two flags (the stop/diverged
  agreement, every step: a pure latency term that matters at scale);
- K-FAC, every ``factor_interval`` steps: factors on ``min(b, factor_samples)`` samples and one
  all-reduce of all factors; every ``inverse_interval`` steps: the damped inverses, spread over
  the ranks by a greedy assignment on ``d^3`` (as ``sweeps/kfac.py`` does), each owner then
  broadcasting its share; every step: the preconditioning products.

On a shared host (the ``local`` preset) ``p`` ranks time-share the cores: the step's work is
stretched by ``max(1, p / host_cores)`` (``host_cores`` calibrated from 2-rank runs), and every
sequential step of a collective waits, with probability ``1 - host_cores / p``, half a
scheduler slice for its peer to run.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator.perfmodel.collectives import Link, allreduce_time, broadcast_time
from orchestrator.perfmodel.machine import Profile
from orchestrator.perfmodel.workloads import ModelSpec

__all__ = ["KfacSchedule", "StepPrediction", "efficiency", "inverse_load", "predict_step"]


@dataclass(frozen=True)
class KfacSchedule:
    """K-FAC's intervals, as in ``conf/optimizer/kfac.yaml`` (what our runs use).

    Not the published practical intervals of Osawa et al. (CVPR 2019; SP-NGD, arXiv
    2002.06015): no interval could be read from those papers' text here (docs/reports.md,
    ``orch predict``), so ``orch predict`` defaults to these and its options override them.
    """

    factor_interval: int = 1
    inverse_interval: int = 10
    factor_samples: int | None = None


@dataclass(frozen=True)
class StepPrediction:
    """One step's predicted time, by part, in seconds."""

    nodes: int
    batch_per_node: float
    compute: float
    curvature: float
    inverse: float
    precondition: float
    comm_gradients: float
    comm_factors: float
    comm_inverses: float
    stretch: float

    @property
    def communication(self) -> float:
        return self.comm_gradients + self.comm_factors + self.comm_inverses

    @property
    def total(self) -> float:
        work = self.compute + self.curvature + self.inverse + self.precondition
        return self.stretch * work + self.communication

    @property
    def samples_per_s(self) -> float:
        return self.nodes * self.batch_per_node / self.total


def inverse_load(dims: Sequence[int], ranks: int) -> float:
    """Largest per-rank sum of ``d^3`` when the inverses are spread greedily over ``ranks``.

    Largest first, each to the least-loaded rank (the LPT rule ``sweeps/kfac.py`` uses).

    >>> inverse_load([4, 3, 2], 1)
    99.0
    >>> inverse_load([4, 3, 2], 2)
    64.0
    """
    costs = sorted((float(d) ** 3 for d in dims), reverse=True)
    if ranks >= len(costs):
        return costs[0] if costs else 0.0
    loads = [0.0] * ranks
    heapq.heapify(loads)
    for c in costs:
        heapq.heappush(loads, heapq.heappop(loads) + c)
    return max(loads)


def predict_step(
    model: ModelSpec,
    optimizer: str,
    nodes: int,
    batch_per_node: float,
    *,
    profile: Profile,
    topology: str,
    link: Link,
    dims: Sequence[int] | None = None,
    kfac: KfacSchedule | None = None,
) -> StepPrediction:
    """Predict one training step.

    Args:
        model: The model's costs.
        optimizer: ``sgd`` or ``kfac``.
        nodes: Data-parallel ranks, one per node.
        batch_per_node: Samples per rank per step.
        profile: The node's rates.
        topology: ``flat``, ``tree`` or ``torus3d`` (picks the all-reduce algorithm).
        link: The network link.
        dims: The torus' dims (``torus3d``).
        kfac: K-FAC's intervals (default: ``conf/optimizer/kfac.yaml``'s).

    Returns:
        The prediction.

    Raises:
        ValueError: For an unknown optimizer, or nodes or batch below 1.
    """
    if optimizer not in ("sgd", "kfac"):
        raise ValueError(f"unknown optimizer {optimizer!r}: expected sgd or kfac")
    if nodes < 1 or batch_per_node <= 0:
        raise ValueError(f"nodes={nodes} and batch_per_node={batch_per_node} must be positive")
    p, b = nodes, batch_per_node
    compute = (
        profile.step_overhead_s
        + b * model.train_flops / profile.train_flops
        + model.params * profile.update_s_per_param
    )
    grads = allreduce_time(topology, p, model.gradient_bytes, link, dims)
    grads += allreduce_time(topology, p, 8.0, link, dims)  # the per-step agreement on flags
    curvature = inverse = precondition = comm_f = comm_i = 0.0
    if optimizer == "kfac":
        k = kfac or KfacSchedule()
        fb = min(b, k.factor_samples) if k.factor_samples else b
        curvature = (
            profile.curvature_overhead_s + fb * model.curvature_flops / profile.curvature_flops
        ) / k.factor_interval
        inverse = (
            inverse_load(model.factor_dims, p) / profile.inverse_units_per_s / k.inverse_interval
        )
        precondition = model.precondition_flops / profile.precondition_flops
        if p > 1:
            comm_f = allreduce_time(topology, p, model.factor_bytes, link, dims) / (
                k.factor_interval
            )
            owners = min(p, len(model.factor_dims))
            comm_i = (
                owners * broadcast_time(p, model.factor_bytes / owners, link) / k.inverse_interval
            )
    stretch = 1.0
    if profile.host_cores is not None and p > 1:
        # One rank's step was measured with whatever share of the host it got: it is the unit.
        # p ranks time-share host_cores (calibrated on 2 ranks; below 1 on a busy machine).
        stretch = max(1.0, p / profile.host_cores)
        # Each sequential step of a collective waits for its peer to be scheduled, which is
        # not running with probability 1 - cores/p.
        steps = 4.0 * (p - 1)  # ring steps of the gradient and flag all-reduces
        if optimizer == "kfac":
            k = kfac or KfacSchedule()
            steps += 2 * (p - 1) / k.factor_interval
            steps += min(p, len(model.factor_dims)) * math.ceil(math.log2(p)) / k.inverse_interval
        grads += steps * max(0.0, 1.0 - profile.host_cores / p) * profile.sched_wait_s
    return StepPrediction(
        nodes=p,
        batch_per_node=b,
        compute=compute,
        curvature=curvature,
        inverse=inverse,
        precondition=precondition,
        comm_gradients=grads,
        comm_factors=comm_f,
        comm_inverses=comm_i,
        stretch=stretch,
    )


def efficiency(pred: StepPrediction, single: StepPrediction) -> float:
    """Parallel efficiency: throughput at N nodes over N times that of a perfectly parallel
    node, at most 1 by construction.

    The perfectly parallel node is ``single`` (the step on one node) with the work K-FAC spreads
    over the ranks, the inverses, divided by N. Against one node doing every inverse itself,
    N nodes that share them looked superlinear (K-FAC at 1.09-1.15 from 2 to 80,000 nodes of
    fugaku); against this baseline the loss is what N nodes really lose: communication, the
    imbalance of the inverses (the largest rank's share is at least the mean), a shared host.
    SGD's baseline is ``single`` itself (throughput(N) / (N x throughput(1))).
    """
    ideal = dataclasses.replace(single, inverse=single.inverse / pred.nodes)
    return pred.samples_per_s / (pred.nodes * ideal.samples_per_s)
