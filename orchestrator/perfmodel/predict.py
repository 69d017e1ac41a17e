"""The table ``orch predict`` prints: predicted scaling on a preset, with measured points beside.

Kept apart from the CLI so a notebook or a test gets the same rows as data.
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from orchestrator.perfmodel.calibrate import RunPoint, calibrate
from orchestrator.perfmodel.collectives import Link
from orchestrator.perfmodel.machine import DEFAULT_PROFILE, NETWORKS, Network, Profile
from orchestrator.perfmodel.model import KfacSchedule, efficiency, predict_step
from orchestrator.perfmodel.workloads import get_model
from orchestrator.resources.cluster import Cluster

__all__ = ["Row", "default_nodes", "machine_for", "prediction_rows", "profile_for"]


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    optimizer: str
    nodes: int
    batch_per_node: float
    step_ms: float
    compute_ms: float
    comm_ms: float
    kfac_ms: float
    samples_per_s: float
    efficiency: float
    measured_samples_per_s: float | None
    measured_step_ms: float | None


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
    net = NETWORKS.get(cluster.name, NETWORKS["slurm16"])
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
