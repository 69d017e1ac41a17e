"""The machine side of the model: a node's compute profile and the network of each preset.

A :class:`Profile` holds what calibration measures on one node (``calibrate.py``): a fixed
per-step overhead and effective FLOP rates for the phases of a step. Other presets get the same
profile scaled to their node's effective rate (:data:`NETWORKS`), since nothing can be measured
on them from here. Those rates and links are assumptions written down with their source; every
one can be overridden on the command line (``orch predict --node-tflops --alpha-us --beta-gbps``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from orchestrator.perfmodel.collectives import Link

__all__ = ["DEFAULT_PROFILE", "NETWORKS", "Network", "Profile", "network_for"]


@dataclass(frozen=True)
class Network:
    """What the model assumes of a cluster preset beyond its YAML (topology and node count).

    Args:
        link: One link's alpha and beta.
        node_flops: Effective float32 training FLOP/s of one node (one data-parallel rank per
            node); ``None``: this machine, whatever calibration measured.
        shared_host_cores: The preset's "nodes" are processes sharing one host of this many
            cores (the ``local`` preset): ranks beyond them time-share the cores.
        source: Where the figures come from.
    """

    link: Link
    node_flops: float | None
    shared_host_cores: int | None = None
    source: str = ""


NETWORKS: dict[str, Network] = {
    # gloo over loopback TCP: a 235,146-float all-reduce between 2 ranks took 0.66 ms at best
    # (benchmarks/README.md, "Data-parallel throughput"): 2 alpha + n beta with these values.
    "local": Network(
        Link(50e-6, 1 / 2.0e9), None, shared_host_cores=2, source="gloo loopback, measured"
    ),
    # The 16 Slurm nodes are emulated on this machine too; modelled as real 4-core nodes on
    # 10 GbE (typical MPI latency 20 us), each as fast as the calibrated node.
    "slurm16": Network(Link(20e-6, 1 / 1.25e9), None, source="10 GbE assumption"),
    # 4 V100 per node (15.7 TFLOP/s fp32 each) at 40 % of peak in training; EDR InfiniBand
    # (100 Gb/s, about 1.5 us MPI latency through the switches).
    "fattree1024": Network(
        Link(1.5e-6, 1 / 12.5e9), 4 * 15.7e12 * 0.4, source="V100 x4, EDR IB assumption"
    ),
    # A64FX: 6.76 TFLOP/s fp32 peak (48 cores, 2.2 GHz), 30 % in training; Tofu-D: 6.8 GB/s
    # per link, about 1 us MPI latency (0.5 us put latency plus software).
    "fugaku": Network(
        Link(1.0e-6, 1 / 6.8e9), 6.76e12 * 0.3, source="A64FX 30 % of fp32 peak, Tofu-D"
    ),
}


def network_for(cluster: str) -> Network:
    """What the model assumes of preset ``cluster``: its entry of :data:`NETWORKS`, else that of
    ``slurm16`` (real nodes as fast as this machine's, on 10 GbE).

    >>> network_for("my-cluster") is NETWORKS["slurm16"]
    True
    """
    return NETWORKS.get(cluster, NETWORKS["slurm16"])


@dataclass(frozen=True)
class Profile:
    """Effective rates of one node, per phase of a training step.

    Args:
        step_overhead_s: Fixed time per step (interpreter, kernel launches, small ops).
        train_flops: FLOP/s of forward plus backward (``ModelSpec.train_flops`` per sample).
        update_s_per_param: SGD's update per parameter per step (memory-bound).
        curvature_overhead_s: Fixed time per K-FAC factor update.
        curvature_flops: FLOP/s of accumulating the factors (including the sampled-Fisher
            backward, which our K-FAC counts there).
        inverse_units_per_s: ``d^3`` units per second of a factor's damped inverse.
        precondition_flops: FLOP/s of ``G^-1 V A^-1``.
        host_cores: Cores the ranks of a shared host effectively get (calibrated on 2 ranks).
        sched_wait_s: On an oversubscribed shared host, the mean wait of one step of a
            collective for a peer that is not running (about half a scheduler time slice):
            1 ms, a constant fitted by hand to five 4-rank measurements here, not derived
            (see docs/reports.md).
        calibrated_from: A note naming the runs the values came from.
    """

    step_overhead_s: float
    train_flops: float
    update_s_per_param: float
    curvature_overhead_s: float
    curvature_flops: float
    inverse_units_per_s: float
    precondition_flops: float
    host_cores: float | None = None
    sched_wait_s: float = 1.0e-3
    calibrated_from: str = "defaults"

    def scaled(self, node_flops: float) -> Profile:
        """This profile moved to a node of ``node_flops`` effective FLOP/s.

        Every rate scales by the ratio of the nodes' rates; the fixed overheads stay (they are
        software, not arithmetic).
        """
        r = node_flops / self.train_flops
        return replace(
            self,
            train_flops=self.train_flops * r,
            update_s_per_param=self.update_s_per_param / r,
            curvature_flops=self.curvature_flops * r,
            inverse_units_per_s=self.inverse_units_per_s * r,
            precondition_flops=self.precondition_flops * r,
            host_cores=None,
        )


#: This machine, one thread, before any calibration: the MLP on MNIST-5k at batch 1,024 took
#: about 13 ms per forward plus backward (1.44 GFLOP) in benchmarks/README.md.
DEFAULT_PROFILE = Profile(
    step_overhead_s=0.3e-3,
    train_flops=100e9,
    update_s_per_param=2.5e-9,
    curvature_overhead_s=0.5e-3,
    curvature_flops=20e9,
    inverse_units_per_s=2e9,
    precondition_flops=20e9,
)
