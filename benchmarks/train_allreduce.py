r"""Time one gloo all-reduce of a gradient-sized buffer (run under torchrun; rank 0 prints).

The floor under the data-parallel jobs' communication phase: what an all-reduce costs when every
rank arrives at once, without the waiting for a slower rank that a training step adds.

With ``--step-batch B`` each rank instead runs a training step between all-reduces (an MLP
784-256-128-10 forward and backward on B random samples, then the all-reduce of its flat
gradient, 235,146 floats), and rank 0 prints the step's two parts and the CPU time over wall
time of every rank (a gloo wait that spins shows as CPU time); ``--no-allreduce`` leaves the
all-reduce out, to see what running beside the other rank does to the compute alone;
``--barrier`` puts a barrier before each all-reduce and counts it in the compute, so the
all-reduce is timed with both ranks already there (waiting for the other rank, or moving data).

Usage::

    torchrun --standalone --nproc_per_node=2 benchmarks/train_allreduce.py --floats 235146
    torchrun --standalone --nproc_per_node=1 benchmarks/train_allreduce.py --step-batch 256
    torchrun --standalone --nproc_per_node=2 benchmarks/train_allreduce.py --step-batch 256
    torchrun --standalone --nproc_per_node=2 benchmarks/train_allreduce.py --step-batch 256 \
        [--no-allreduce | --barrier]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812 (the name every torch reader expects)
from torch import nn

from sweeps.distributed import init_distributed, shutdown


def bare(floats: int, repeats: int) -> list[float]:
    buf = torch.ones(floats)
    times = []
    for i in range(repeats + 5):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(buf)
        if i >= 5:
            times.append(time.perf_counter() - start)
    return times


def steps(
    batch: int, repeats: int, reduce: bool, barrier: bool
) -> tuple[list[float], list[float], float]:
    """Per step: compute seconds, all-reduce seconds; and CPU time over wall time (``reduce``
    False: no collective at all, so it also runs as a single process)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    x, y = torch.randn(batch, 784), torch.randint(0, 10, (batch,))
    compute, comm = [], []
    if reduce:
        dist.barrier()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(repeats + 20):
        t0 = time.perf_counter()
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        t1 = time.perf_counter()
        flat = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
        if reduce and barrier:
            dist.barrier()
            t1 = time.perf_counter()
        if reduce:
            dist.all_reduce(flat)
        t2 = time.perf_counter()
        if i >= 20:
            compute.append(t1 - t0)
            comm.append(t2 - t1)
    return compute, comm, (time.process_time() - cpu0) / (time.perf_counter() - wall0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--floats", type=int, default=235_146)  # the MNIST-5k MLP's parameters
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--step-batch", type=int, default=0, help="samples per rank per step")
    p.add_argument("--no-allreduce", action="store_true")
    p.add_argument("--barrier", action="store_true", help="a barrier before each all-reduce")
    args = p.parse_args()
    torch.set_num_threads(1)
    world = init_distributed("cpu")
    ms = lambda xs: 1000 * statistics.median(xs)  # noqa: E731 - local shorthand
    try:
        if not args.step_batch:
            times = bare(args.floats, args.repeats)
            if world.rank == 0:
                print(
                    f"allreduce ranks={world.size} floats={args.floats}: "
                    f"median {ms(times):.2f} ms, min {1000 * min(times):.2f} ms"
                )
            return
        reduce = world.distributed and not args.no_allreduce
        compute, comm, busy = steps(args.step_batch, args.repeats, reduce, args.barrier)
        every = [torch.tensor([ms(compute), ms(comm), busy])]
        if world.distributed:
            every = [torch.zeros(3) for _ in range(world.size)]
            dist.all_gather(every, torch.tensor([ms(compute), ms(comm), busy]))
        if world.rank == 0:
            after = " after a barrier" if reduce and args.barrier else ""
            print(
                f"step ranks={world.size} batch={args.step_batch} per rank, "
                f"all-reduce {'on' if reduce else 'off'}{after}: "
                + "; ".join(
                    f"rank {r}: compute {c:.2f} ms, all-reduce {a:.2f} ms, CPU/wall {b:.2f}"
                    for r, (c, a, b) in enumerate(t.tolist() for t in every)
                )
            )
    finally:
        shutdown()


if __name__ == "__main__":
    main()
