"""K-FAC versus SGD: epochs and training time to a target validation accuracy, per batch size.

For every batch size and optimiser, a small learning-rate grid is run and the best point (fewest
seconds to the target; a run that misses it counts as infinitely slow) is reported:

- SGD: ``0.1 * sqrt(B / 128) * {0.25, 0.5, 1, 2}`` (square-root scaling around the lr tuned at 128);
- K-FAC: ``{0.03, 0.1, 0.3}`` (KL clipping makes it far less sensitive to the lr).

Both use momentum 0.9, weight decay 5e-4, one epoch of linear warm-up then cosine over the epoch
budget, seed 0. K-FAC: true (sampled) Fisher, factors every step, inverses every 5 steps
(Cholesky), damping 0.01, KL clip 0.01, factors estimated on 256 samples of each batch
(``factor_samples``). Time excludes evaluation (done after every epoch).

Usage::

    python benchmarks/train_time_to_target.py --data mnist5k --batch-sizes 128,512,1024,2000
    python benchmarks/train_time_to_target.py --data mnist1d --batch-sizes 128,512,2048,4096
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from train_common import machine, run_job, table

PRESETS: dict[str, dict[str, Any]] = {
    # 4,000 training images: the largest batch is 2,000 (2 steps per epoch).
    "mnist5k": {"model": ["model=mlp"], "target": 0.92, "epochs": 60, "data": ["data=mnist5k"]},
    # 20,000 generated training signals, a small CNN on (1, 40) inputs.
    "mnist1d": {
        "model": ["model=cnn", "model.channels=[16,32]", "model.hidden=128"],
        "target": 0.90,
        "epochs": 40,
        "data": ["data=mnist1d", "data.num_samples=25000"],
    },
}
KFAC = [
    "optimizer.kfac.inverse_interval=5",
    "optimizer.kfac.inverse=cholesky",
    "optimizer.kfac.damping=0.01",
    "optimizer.kfac.kl_clip=0.01",
    "optimizer.kfac.factor_samples=256",
]


def grid(optimizer: str, bs: int) -> list[float]:
    if optimizer == "sgd":
        centre = 0.1 * math.sqrt(bs / 128)
        return [round(centre * m, 4) for m in (0.25, 0.5, 1.0, 2.0)]
    return [0.03, 0.1, 0.3]


def _rank(trial: tuple[float, dict[str, Any]]) -> tuple[float, float]:
    # Fastest to the target; among runs that all missed it, the most accurate.
    r = trial[1]
    return (r["time_to_target_s"] or math.inf, -r["best_val_accuracy"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=sorted(PRESETS), default="mnist5k")
    p.add_argument("--batch-sizes", default="128,512,1024,2000")
    p.add_argument("--target", type=float, default=None)
    p.add_argument("--epochs", type=int, default=None)
    args = p.parse_args()
    preset = PRESETS[args.data]
    target = args.target or preset["target"]
    epochs = args.epochs or preset["epochs"]
    print(f"# time to {target:.0%} validation accuracy on {args.data}, budget {epochs} epochs")
    print(f"# {machine()}")
    best_rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        for opt in ("sgd", "kfac"):
            trials = []
            for lr in grid(opt, bs):
                r = run_job(
                    [
                        *preset["data"], *preset["model"], f"optimizer={opt}",
                        f"optimizer.lr={lr}", f"batch_size={bs}", f"epochs={epochs}",
                        f"target_accuracy={target}", "schedule.warmup_epochs=1",
                        *(KFAC if opt == "kfac" else []),
                    ]
                )  # fmt: skip
                trials.append((lr, r))
                print(
                    f"  bs={bs} {opt} lr={lr}: {r['status']}, "
                    f"best val {r['best_val_accuracy']:.3f}, "
                    f"epochs to target {r['epochs_to_target']}, time {r['time_to_target_s']}",
                    flush=True,
                )
            lr, r = min(trials, key=_rank)
            best_rows.append(
                {
                    "batch": bs, "optimizer": opt, "lr": lr,
                    "epochs_to_target": r["epochs_to_target"],
                    "time_to_target_s": r["time_to_target_s"],
                    "best_val_acc": r["best_val_accuracy"],
                    "ms_per_step": 1000 * r["train_time_s"] / max(r["steps"], 1),
                }
            )  # fmt: skip
    print()
    print(table(best_rows, ["batch", "optimizer", "lr", "epochs_to_target", "time_to_target_s",
                            "best_val_acc", "ms_per_step"]))  # fmt: skip
    largest = max(r["batch"] for r in best_rows)
    sgd, kfac = (next(r for r in best_rows if r["batch"] == largest and r["optimizer"] == o)
                 for o in ("sgd", "kfac"))  # fmt: skip
    if sgd["time_to_target_s"] and kfac["time_to_target_s"]:
        ratio = kfac["time_to_target_s"] / sgd["time_to_target_s"]
        print(f"\nlargest batch {largest}: K-FAC/SGD time to target = {ratio:.2f} (goal <= 0.7), "
              f"epochs {kfac['epochs_to_target']} vs {sgd['epochs_to_target']}")  # fmt: skip
    else:
        print(f"\nlargest batch {largest}: SGD reached target: {bool(sgd['time_to_target_s'])}, "
              f"K-FAC reached target: {bool(kfac['time_to_target_s'])}")  # fmt: skip
    print(f"# benchmark wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
