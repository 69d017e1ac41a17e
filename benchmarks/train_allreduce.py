"""Time one gloo all-reduce of a gradient-sized buffer (run under torchrun; rank 0 prints).

The floor under the data-parallel jobs' communication phase: what an all-reduce costs when every
rank arrives at once, without the waiting for a slower rank that a training step adds.

Usage::

    torchrun --standalone --nproc_per_node=2 benchmarks/train_allreduce.py --floats 235146
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist

from sweeps.distributed import init_distributed, shutdown


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--floats", type=int, default=235_146)  # the MNIST-5k MLP's parameters
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    torch.set_num_threads(1)
    world = init_distributed("cpu")
    try:
        buf = torch.ones(args.floats)
        times = []
        for i in range(args.repeats + 5):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(buf)
            if i >= 5:
                times.append(time.perf_counter() - start)
        if world.rank == 0:
            print(
                f"allreduce ranks={world.size} floats={args.floats}: "
                f"median {1000 * statistics.median(times):.2f} ms, "
                f"min {1000 * min(times):.2f} ms"
            )
    finally:
        shutdown()


if __name__ == "__main__":
    main()
