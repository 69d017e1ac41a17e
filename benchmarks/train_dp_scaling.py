"""Data-parallel throughput, scaling efficiency and peak memory at 1, 2 and 4 ranks (torchrun).

Every job is ``torchrun --standalone --nproc_per_node=N -m sweeps.train`` with gloo, one thread
per rank. Strong scaling keeps the global batch (``--global-batch``) and splits it; weak scaling
keeps ``--per-rank-batch`` per rank. Throughput is global samples per second of training time on
rank 0 (evaluation excluded); efficiency is ``throughput(N) / (N * throughput(1))``. Peak memory
is each rank's peak resident set size (it includes about 0.5 GB of interpreter and torch).

On a 2-core machine, 4 ranks oversubscribe the cores: efficiency at 4 cannot exceed 0.5 there.
Each point is the fastest of ``--repeats`` runs. ``comm_ms_per_step`` includes waiting for the
slowest rank at the all-reduce.

Usage::

    python benchmarks/train_dp_scaling.py --ranks 1,2,4 --steps 40
"""

from __future__ import annotations

import argparse
from typing import Any

from train_common import machine, run_torchrun, table

KFAC = [
    "optimizer.kfac.inverse=cholesky",
    "optimizer.kfac.inverse_interval=10",
    "optimizer.kfac.factor_samples=256",
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", default="1,2,4")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--global-batch", type=int, default=1024)
    p.add_argument("--per-rank-batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]
    base = ["data=mnist5k", "model=mlp", f"max_steps={args.steps}", "schedule=constant"]
    print(f"# data-parallel scaling, MLP on MNIST-5k, {args.steps} steps, gloo")
    print(f"# {machine()}")
    rows: list[dict[str, Any]] = []
    for mode in ("strong", "weak"):
        for opt in ("sgd", "kfac"):
            single = None
            for n in ranks:
                bs = args.global_batch if mode == "strong" else args.per_rank_batch * n
                extra = [f"optimizer={opt}", f"batch_size={bs}", *(KFAC if opt == "kfac" else [])]
                # Fastest of the repeats: other processes share the cores.
                r = max(
                    (run_torchrun(n, [*base, *extra]) for _ in range(args.repeats)),
                    key=lambda r: float(r["samples_per_sec"]),
                )
                thr = r["samples_per_sec"]
                single = single or (thr if n == 1 else None)
                phases = r["step_time_ms"]
                rows.append(
                    {
                        "mode": mode, "optimizer": opt, "ranks": n, "global_batch": bs,
                        "samples_per_s": thr,
                        "efficiency": thr / (n * single) if single else None,
                        "comm_ms_per_step": phases["communication"],
                        "step_ms": sum(phases.values()),
                        "peak_mb_per_rank": "/".join(
                            f"{m:.0f}" for m in r["peak_memory_mb_per_rank"]
                        ),
                    }
                )  # fmt: skip
                print(f"  {mode} {opt} ranks={n}: {thr:.0f} samples/s", flush=True)
    print()
    print(table(rows, ["mode", "optimizer", "ranks", "global_batch", "samples_per_s", "efficiency",
                       "step_ms", "comm_ms_per_step", "peak_mb_per_rank"]))  # fmt: skip


if __name__ == "__main__":
    main()
