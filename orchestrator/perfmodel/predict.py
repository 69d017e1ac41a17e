"""The table ``orch predict`` prints: predicted scaling on a preset, with measured points beside.

Kept apart from the CLI so a notebook or a test gets the same rows as data, and so is every
choice behind them: which profile (:func:`profile_for`) and network (:func:`machine_for`,
overrides included: :func:`calibrated_machine`) a preset gets, and which presets the points
measured here are shown beside (:func:`shows_measured`).
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from orchestrator.perfmodel.calibrate import RunPoint, calibrate
from orchestrator.perfmodel.collectives import Link
from orchestrator.perfmodel.machine import DEFAULT_PROFILE, Network, Profile, network_for
from orchestrator.perfmodel.model import KfacSchedule, efficiency, predict_step
from orchestrator.perfmodel.workloads import get_model
from orchestrator.resources.cluster import Cluster

__all__ = [
    "CONVERGED_BATCH",
    "LEFT_OUT",
    "Machine",
    "Row",
    "batch_warnings",
    "calibrated_machine",
    "default_nodes",
    "machine_for",
    "prediction_rows",
    "profile_for",
    "shows_measured",
]

MEASURED_HERE = ("local", "slurm16")
"""The presets that model this machine (``slurm16``'s nodes are emulated on it too)."""


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    optimizer: str
    nodes: int
    batch_per_node: float
    global_batch: float
    step_ms: float
    compute_ms: float
    comm_ms: float
    kfac_ms: float
    samples_per_s: float
    efficiency: float
    measured_samples_per_s: float | None
    measured_step_ms: float | None


CONVERGED_BATCH: dict[tuple[str, str], tuple[int, str]] = {
    ("resnet50", "kfac"): (
        32_768,
        "Osawa et al., Large-Scale Distributed Second-Order Optimization Using Kronecker-Factored "
        "Approximate Curvature for Deep Convolutional Neural Networks, CVPR 2019: ResNet-50 on "
        "ImageNet to 75 % top-1 in 35 epochs at a mini-batch of 32,768",
    ),
    ("resnet50", "sgd"): (
        8_192,
        "Goyal et al., Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour, 2017: "
        "ResNet-50 with the linear scaling rule and warm-up, no loss of accuracy up to 8,192",
    ),
}
"""(model, optimizer) -> the largest global batch published to converge, with its source. A
step time says nothing of the steps to an accuracy: past this batch, more nodes may buy none."""


LEFT_OUT = (
    "not modelled: stragglers and OS jitter (every rank is as fast as the calibrated one; at "
    "thousands of nodes the slowest rank sets each collective), data loading and I/O, "
    "contention with other jobs on the network, and the steps to an accuracy (only a step's time)"
)
"""What the step model leaves out, printed under every prediction."""


def batch_warnings(rows: Sequence[Row], model: str) -> list[str]:
    """One line per optimizer whose rows pass the largest batch known to converge for
    ``model`` (:data:`CONVERGED_BATCH`)."""
    out = []
    for optimizer in dict.fromkeys(r.optimizer for r in rows):
        known = CONVERGED_BATCH.get((model, optimizer))
        if known is None:
            continue
        limit, source = known
        past = [r for r in rows if r.optimizer == optimizer and r.global_batch > limit]
        if past:
            out.append(
                f"{optimizer}: a global batch past {limit:,} (from {past[0].nodes:,} nodes) is "
                f"beyond the largest known to converge for {model} ({source})"
            )
    return out


def default_nodes(size: int, limit: int = 80_000) -> list[int]:
    """Powers of two up to the cluster (or ``limit``), and the largest size itself.

    >>> default_nodes(4)
    [1, 2, 4]
    >>> default_nodes(158976)[-3:]
    [32768, 65536, 80000]
    """
    top = min(size, limit)
    nodes = [1 << k for k in range(top.bit_length()) if 1 << k <= top]
    return nodes if nodes[-1] == top else [*nodes, top]


def profile_for(
    points: Sequence[RunPoint], calibrate_on: str | None, cores: int
) -> tuple[Profile, str | None]:
    """The calibrated profile of this machine, or the defaults when no runs fit.

    Args:
        points: Runs from MLflow.
        calibrate_on: The model preset to calibrate on; ``None``: the one with most 1-rank runs.
        cores: The shared host's cores (the ``local`` preset's ``node.cpus``).

    Returns:
        The profile and the model preset it was calibrated on (``None``: defaults).
    """
    ones = collections.Counter(p.model for p in points if p.world_size == 1 and p.model)
    name = calibrate_on or (ones.most_common(1)[0][0] if ones else None)
    if name is None or ones.get(name, 0) == 0:
        return DEFAULT_PROFILE, None
    return calibrate(points, name, cores=cores), name


def machine_for(
    cluster: Cluster,
    profile: Profile,
    *,
    node_flops: float | None = None,
    link: Link | None = None,
) -> tuple[Profile, Network]:
    """The profile and network of a preset: this machine's profile moved to its nodes."""
    net = network_for(cluster.name)
    if link is not None:
        net = replace(net, link=link)
    flops = node_flops if node_flops is not None else net.node_flops
    if flops is not None:
        profile = profile.scaled(flops)
    elif net.shared_host_cores is None:
        profile = replace(profile, host_cores=None)
    elif profile.host_cores is None:
        # Uncalibrated: the ranks share the host's cores, all of them free.
        profile = replace(profile, host_cores=float(net.shared_host_cores))
    return profile, net


@dataclass(frozen=True)
class Machine:
    """A preset as the model sees it.

    Args:
        profile: Its node's profile.
        network: Its network (links, node rate, where the figures come from).
        calibrated_on: The model preset the profile was calibrated on (``None``: defaults).
    """

    profile: Profile
    network: Network
    calibrated_on: str | None


def calibrated_machine(
    cluster: Cluster,
    points: Sequence[RunPoint],
    *,
    calibrate_on: str | None,
    cores: int,
    node_tflops: float | None = None,
    alpha_us: float | None = None,
    beta_gbps: float | None = None,
) -> Machine:
    """The profile calibrated on ``points`` (:func:`profile_for`), moved to the nodes of
    ``cluster`` (:func:`machine_for`), with the given figures replacing the preset's own.

    Args:
        cluster: The preset predicted.
        points: Runs from MLflow (none: the defaults).
        calibrate_on: The model preset to calibrate on; ``None``: the one with most 1-rank runs.
        cores: The shared host's cores (the ``local`` preset's ``node.cpus``).
        node_tflops: A node's TFLOP/s instead of the preset's (0 or ``None``: the preset's).
        alpha_us: The link latency in microseconds instead of the preset's.
        beta_gbps: The link bandwidth in GB/s instead of the preset's.

    Raises:
        ValueError: From :func:`~orchestrator.perfmodel.calibrate.calibrate`: no finished
            1-rank run of the model calibrated on.
    """
    base, calibrated_on = profile_for(points, calibrate_on, cores=cores)
    link = None
    if alpha_us is not None or beta_gbps is not None:
        cur = network_for(cluster.name).link
        link = Link(
            alpha_us * 1e-6 if alpha_us is not None else cur.alpha_s,
            1 / (beta_gbps * 1e9) if beta_gbps is not None else cur.beta_s_per_byte,
        )
    profile, network = machine_for(
        cluster, base, node_flops=node_tflops * 1e12 if node_tflops else None, link=link
    )
    return Machine(profile, network, calibrated_on)


def shows_measured(cluster: str) -> bool:
    """Whether the points measured on this machine belong beside the predictions for preset
    ``cluster``: only on a preset that models this machine.

    >>> shows_measured("local"), shows_measured("fugaku")
    (True, False)
    """
    return cluster in MEASURED_HERE


def prediction_rows(
    *,
    model: str,
    cluster: Cluster,
    profile: Profile,
    network: Network,
    optimizers: Sequence[str],
    nodes: Sequence[int],
    batch_per_node: float | None = None,
    global_batch: int | None = None,
    kfac: KfacSchedule | None = None,
    measured: Sequence[RunPoint] = (),
) -> list[Row]:
    """Predicted rows, with the measured medians of matching runs (same model, optimizer,
    nodes and batch) beside.

    Raises:
        ValueError: When neither or both of ``batch_per_node`` and ``global_batch`` are given,
            or a node count exceeds the cluster.
    """
    if (batch_per_node is None) == (global_batch is None):
        raise ValueError("give exactly one of batch_per_node (weak) and global_batch (strong)")
    spec = get_model(model)
    dims = getattr(cluster.topology, "dims", None)
    kind = {"FlatTopology": "flat", "TreeTopology": "tree", "Torus3DTopology": "torus3d"}[
        type(cluster.topology).__name__
    ]
    rows = []
    for opt in optimizers:
        single = None
        for n in sorted(nodes):
            if n > cluster.size:
                raise ValueError(f"{n} nodes exceed cluster {cluster.name!r} ({cluster.size})")
            b = batch_per_node if batch_per_node is not None else global_batch / n  # type: ignore[operator]
            pred = predict_step(
                spec,
                opt,
                n,
                b,
                profile=profile,
                topology=kind,
                link=network.link,
                dims=dims,
                kfac=kfac,
            )
            if single is None:
                single = predict_step(
                    spec,
                    opt,
                    1,
                    b if global_batch is None else float(global_batch),
                    profile=profile,
                    topology=kind,
                    link=network.link,
                    dims=dims,
                    kfac=kfac,
                )
            same = [
                p
                for p in measured
                if p.model == model
                and p.optimizer == opt
                and p.world_size == n
                and abs(p.batch_per_rank - b) < 1e-9
            ]
            rows.append(
                Row(
                    optimizer=opt,
                    nodes=n,
                    batch_per_node=b,
                    global_batch=b * n,
                    step_ms=pred.total * 1e3,
                    compute_ms=pred.stretch * pred.compute * 1e3,
                    comm_ms=pred.communication * 1e3,
                    kfac_ms=pred.stretch
                    * (pred.curvature + pred.inverse + pred.precondition)
                    * 1e3,
                    samples_per_s=pred.samples_per_s,
                    efficiency=efficiency(pred, single),
                    measured_samples_per_s=(
                        statistics.median(p.samples_per_s for p in same) if same else None
                    ),
                    measured_step_ms=statistics.median(p.step_ms for p in same) if same else None,
                )
            )
    return rows
