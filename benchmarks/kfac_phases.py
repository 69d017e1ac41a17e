"""K-FAC's phases per step in isolation: the conf MLP (784-256-128-10) on random data, SGD
against K-FAC (sampled Fisher, factors every step, Cholesky inverses every 10 steps) with the
factor statistics on the whole batch or on a subset. Median of 40 steps after 5 warm-up steps.

    .venv/bin/python benchmarks/kfac_phases.py [--batch-size 512] [--factor-samples all,128]
        [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812 (the name every torch reader expects)
from torch import nn

from sweeps.kfac import KFAC, KFACSettings


def median_ms(step: Callable[[], None], n: int = 40) -> float:
    for _ in range(5):
        step()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--factor-samples", default="all,128")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    x = torch.randn(args.batch_size, 784)
    y = torch.randint(0, 10, (args.batch_size,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def sgd_step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    sgd = median_ms(sgd_step)
    print(f"batch {args.batch_size}, {args.threads} threads")
    print("| variant | ms/step | ratio | curvature | inverse | precondition |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| sgd | {sgd:.2f} | 1 | 0 | 0 | 0 |")
    for text in args.factor_samples.split(","):
        samples = None if text == "all" else int(text)
        settings = KFACSettings(
            factor_interval=1, inverse_interval=10, factor_samples=samples, inverse="cholesky"
        )
        kfac = KFAC(model, settings)

        def kfac_step(kfac: KFAC = kfac) -> None:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            kfac.step(0.01)
            opt.step()

        total = median_ms(kfac_step)
        kfac.pop_timings()
        for _ in range(20):
            kfac_step()
        phases = {k: 1000 * v / 20 for k, v in kfac.pop_timings().items()}
        print(
            f"| kfac, factors on {text} | {total:.2f} | {total / sgd:.2f} | "
            f"{phases['curvature']:.2f} | {phases['inverse']:.2f} | {phases['precondition']:.2f} |"
        )
        kfac.remove()


if __name__ == "__main__":
    main()
