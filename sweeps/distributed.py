"""Data-parallel plumbing over torch.distributed: gloo on CPU, nccl on GPUs.

The job reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` and ``LOCAL_RANK``, as our
backends and ``torchrun`` set them. Gradients are averaged with one all-reduce of a flat buffer
after ``backward()`` (not DDP's overlapped buckets), so communication time is measured apart from
compute and K-FAC sees averaged gradients.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from sweeps.config import ConfigError

__all__ = [
    "World",
    "agree",
    "all_reduce_gradients",
    "broadcast_state",
    "default_threads",
    "init_distributed",
    "shutdown",
]


@dataclass(frozen=True)
class World:
    """This process's place in the job.

    Attributes:
        rank: Global rank.
        size: Number of ranks.
        local_rank: Rank on this node (selects the GPU).
        local_size: Ranks on this node.
        device: The torch device this rank computes on.
    """

    rank: int
    size: int
    local_rank: int
    local_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        """More than one rank."""
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise ConfigError(name, raw, "environment variable must be an integer", f"{name}=0") from e


def cuda_on_every_rank(size: int, local_size: int) -> bool:
    """Whether ``device=auto`` computes on GPUs: this rank sees one and so does every other.

    All ranks must agree (nccl on some and gloo on others hangs), and one rank cannot see the
    others' devices; so the job-wide ``ORCH_GPUS_PER_NODE`` (what each node of the job was
    given) decides: GPUs when every rank of a node can have its own. Without it (a job started
    by another tool, torchrun) each rank looks at its own devices, as torchrun's users expect.
    """
    if not torch.cuda.is_available():
        return False
    if size == 1 or "ORCH_GPUS_PER_NODE" not in os.environ:
        return True
    return _env_int("ORCH_GPUS_PER_NODE", 0) >= local_size


def init_distributed(device: str) -> World:
    """Join the process group described by the environment (or run alone without one).

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (cuda when available).

    Returns:
        The world.

    Raises:
        ConfigError: When ``WORLD_SIZE > 1`` but ``MASTER_ADDR`` / ``MASTER_PORT`` are missing,
            or cuda is asked for and absent.
    """
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank if size > 1 else 0)
    local_size = _env_int("LOCAL_WORLD_SIZE", size)
    use_cuda = device == "cuda" or (device == "auto" and cuda_on_every_rank(size, local_size))
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("device", device, "no CUDA device is visible", "device=cpu")
    dev = torch.device("cuda", local_rank % torch.cuda.device_count()) if use_cuda else None
    if size > 1 and not (dist.is_available() and dist.is_initialized()):
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(var):
                raise ConfigError(
                    var,
                    None,
                    f"WORLD_SIZE={size} needs {var} in the environment",
                    "MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 (torchrun sets both)",
                )
        if dev is not None:
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return World(rank, size, local_rank, local_size, dev or torch.device("cpu"))


def shutdown() -> None:
    """Leave the process group, if one was joined.

    The ranks first meet at a barrier (bounded by a timeout, so a rank that crashed does not hang
    the others), so that rank 0, which hosts the rendezvous store, does not exit while another
    rank is still tearing its group down: in a CI run a rank was seen aborting (SIGABRT) at exit
    without it.
    """
    if dist.is_available() and dist.is_initialized():
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=timedelta(seconds=60))
            else:
                dist.barrier()
        except RuntimeError:
            pass  # a peer is gone: nothing to wait for
        dist.destroy_process_group()


def default_threads(local_size: int) -> int:
    """Threads per rank: the cores shared out, and exactly 1 when ranks oversubscribe them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, local_size))


def broadcast_state(model: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    for t in list(model.parameters()) + list(model.buffers()):
        dist.broadcast(t.data, src=0)


def all_reduce_gradients(model: nn.Module, size: int) -> None:
    """Average ``.grad`` over ranks in one all-reduce of a flat buffer."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= size
    for g, t in zip(grads, torch.split(flat, [g.numel() for g in grads]), strict=True):
        g.copy_(t.view_as(g))


def agree(flags: list[bool], world: World) -> list[bool]:
    """Each flag true on every rank when it is true on any rank (one small all-reduce for all).

    A signal may reach one rank only, and a loss may turn non-finite on one shard only: every
    rank must still leave the loop at the same step, or the others hang in the next collective.
    """
    if not world.distributed:
        return flags
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v > 0) for v in t.tolist()]
