"""Per-step time of K-FAC over SGD, with inverse intervals 1, 10 and 50, and where it goes.

Each variant runs twice, ``--warmup`` steps and ``--warmup + --steps`` steps; the difference over
``--steps`` is its time per step (start-up and first-step costs cancel). One thread. Variants are
interleaved ``--repeats`` times and each keeps its fastest repeat. Columns after ``ratio`` are
the per-step phases in ms (``update`` is K-FAC's preconditioning plus the SGD step).
K-FAC: sampled Fisher, factors every step (or every ``inverse_interval`` steps with
``--factor-every-inverse``), eigendecomposition or Cholesky inverses.

Usage::

    python benchmarks/train_step_time.py --data mnist5k --model mlp --batch-size 512
    python benchmarks/train_step_time.py --data mnist1d --model cnn --batch-size 512
"""

from __future__ import annotations

import argparse
from typing import Any

from train_common import machine, run_job, table

MODELS = {
    "mlp": ["model=mlp"],
    "cnn": ["model=cnn", "model.channels=[16,32]", "model.hidden=128"],
    "resnet": ["model=resnet", "model.width=16"],
}
DATA = {"mnist5k": ["data=mnist5k"], "mnist1d": ["data=mnist1d", "data.num_samples=25000"]}


def timed(overrides: list[str], steps: int, warmup: int) -> dict[str, Any]:
    """Per-step milliseconds over ``steps`` steps, excluding the first ``warmup`` steps."""
    short = run_job([*overrides, f"max_steps={warmup}", "schedule=constant"])
    long = run_job([*overrides, f"max_steps={warmup + steps}", "schedule=constant"])
    per_step = 1000 * (long["train_time_s"] - short["train_time_s"]) / steps
    phases = {
        p: (long["step_time_ms"][p] * (warmup + steps) - short["step_time_ms"][p] * warmup) / steps
        for p in long["step_time_ms"]
    }
    return {"ms_per_step": per_step, **phases}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=sorted(DATA), default="mnist5k")
    p.add_argument("--model", choices=sorted(MODELS), default="mlp")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--intervals", default="1,10,50")
    p.add_argument("--inverse", choices=("eigen", "cholesky"), default="eigen")
    p.add_argument("--factor-samples", default="null", help="K-FAC factor_samples (null: all)")
    args = p.parse_args()
    intervals = [int(i) for i in args.intervals.split(",")]
    if any(args.steps % k for k in intervals):
        p.error(f"--steps must be a multiple of every interval {intervals}, so that the timed "
                "steps hold a whole number of factor and inverse updates")  # fmt: skip
    base = [*DATA[args.data], *MODELS[args.model], f"batch_size={args.batch_size}", "epochs=1000"]
    print(f"# per-step time, {args.model} on {args.data}, batch {args.batch_size}, "
          f"{args.steps} steps, inverse={args.inverse}, "
          f"factor_samples={args.factor_samples}")  # fmt: skip
    print(f"# {machine()}")
    variants: list[tuple[str, list[str]]] = [("sgd", ["optimizer=sgd"])]
    for factor_too in (False, True):
        for k in intervals:
            if factor_too and k == 1:
                continue
            variants.append((
                f"kfac inv {k}, factors {k if factor_too else 1}",
                [
                    "optimizer=kfac", f"optimizer.kfac.inverse_interval={k}",
                    f"optimizer.kfac.factor_interval={k if factor_too else 1}",
                    f"optimizer.kfac.inverse={args.inverse}",
                    f"optimizer.kfac.factor_samples={args.factor_samples}",
                ],
            ))  # fmt: skip
    # Other processes share the cores: interleave the variants and keep each one's fastest
    # repeat (the least disturbed), so a burst of load does not land on one variant only.
    best: dict[str, dict[str, Any]] = {}
    for rep in range(args.repeats):
        for name, extra in variants:
            m = timed([*base, *extra], args.steps, args.warmup)
            if name not in best or m["ms_per_step"] < best[name]["ms_per_step"]:
                best[name] = m
            print(f"  repeat {rep}: {name}: {m['ms_per_step']:.1f} ms/step", flush=True)
    sgd_ms = best["sgd"]["ms_per_step"]
    rows = [
        {"variant": name, "ratio": best[name]["ms_per_step"] / sgd_ms, **best[name]}
        for name, _ in variants
    ]
    print()
    print(table(rows, ["variant", "ms_per_step", "ratio", "forward", "backward",
                       "curvature", "inverse", "communication", "update"]))  # fmt: skip


if __name__ == "__main__":
    main()
