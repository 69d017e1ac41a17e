"""MLflow logging overhead as a fraction of training time (goal: at most 2 %).

The same job runs with tracking off, to a SQLite store, and to a real ``mlflow server`` on
127.0.0.1 (started here, SQLite behind it), ``--repeats`` times interleaved, fastest kept. Two
figures: ``in_loop_%``, the time the training loop itself spends in logging calls (queueing one
``log_batch`` per window of ``log_every_steps`` steps and one per epoch; a worker thread sends
them) over the training time; ``slowdown_%``, the training time against the run with tracking
off, which also counts the worker thread's competition for the cores (noisy on 2 shared cores).

Usage::

    python benchmarks/train_logging_overhead.py --log-every 20 --epochs 5
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from train_common import MlflowServer, machine, run_job, table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--log-every", default="20,1")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    base = ["data=mnist5k", "model=mlp", f"epochs={args.epochs}", f"batch_size={args.batch_size}"]
    print(f"# logging overhead, MLP on MNIST-5k, batch {args.batch_size}, {args.epochs} epochs")
    print(f"# {machine()}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, MlflowServer(Path(tmp) / "server") as server:
        stores = {"off": None, "sqlite": f"sqlite:///{tmp}/mlflow.db", "server": server}
        for every in [int(e) for e in args.log_every.split(",")]:
            for opt in ("sgd", "kfac"):
                best: dict[str, dict[str, Any]] = {}
                # Interleaved repeats, fastest kept: other processes share the two cores.
                for _ in range(args.repeats):
                    for name, uri in stores.items():
                        track = ["tracking.enabled=false"] if uri is None else [
                            "tracking.enabled=true", f"tracking.uri={uri}",
                            "tracking.experiment=bench",
                        ]  # fmt: skip
                        r = run_job([*base, f"optimizer={opt}", *track, f"log_every_steps={every}"])
                        if name not in best or r["train_time_s"] < best[name]["train_time_s"]:
                            best[name] = r
                off = best["off"]["train_time_s"]
                for name, r in best.items():
                    rows.append(
                        {
                            "log_every": every, "optimizer": opt, "store": name,
                            "steps": r["steps"], "train_s": r["train_time_s"],
                            "log_s": r["log_time_s"], "log_batch_calls": r["log_batch_calls"],
                            "in_loop_%": 100 * r["log_time_s"] / r["train_time_s"],
                            "slowdown_%": 100 * (r["train_time_s"] - off) / off,
                        }
                    )  # fmt: skip
                    print(f"  every {every} {opt} {name}: in loop {rows[-1]['in_loop_%']:.2f} %, "
                          f"slowdown {rows[-1]['slowdown_%']:.1f} %", flush=True)  # fmt: skip
    print()
    print(table(rows, ["log_every", "optimizer", "store", "steps", "train_s", "log_s",
                       "log_batch_calls", "in_loop_%", "slowdown_%"]))  # fmt: skip


if __name__ == "__main__":
    main()
