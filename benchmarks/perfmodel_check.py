"""The performance model against measurements on this machine: 1, 2 and 4 ranks.

    python benchmarks/perfmodel_check.py --optimizers sgd,kfac --out /tmp/perfmodel-check

Runs the training job (MLP on MNIST-5k, one thread per rank, torchrun with gloo) at 1 rank
(batch B/2 and B/4: the per-rank batches below) and at 2 and 4 ranks (global batch B) into a
fresh MLflow store,
calibrates the model on the 1- and 2-rank runs (``orchestrator.perfmodel.calibrate``) and prints
measured (fastest window of 5 steps, and median) against predicted step time for every run:
the 4-rank row is the prediction the model was not fitted on. The same measurement is
``tests/reports/test_perfmodel_4ranks.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "reports"))
sys.path.insert(0, str(ROOT))

from record_experiment import EXPERIMENT, run_trial  # noqa: E402

from orchestrator.perfmodel import MODELS, NETWORKS, calibrate, load_points, predict_step  # noqa: E402
from orchestrator.tracking import connect  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--optimizers", default="sgd,kfac")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    for opt in args.optimizers.split(","):
        folder = args.out / opt
        folder.mkdir(parents=True, exist_ok=False)
        uri = f"sqlite:///{folder.resolve() / 'mlflow.db'}"
        base = [
            "model=mlp",
            "data=mnist5k",
            f"optimizer={opt}",
            "schedule=constant",
            f"max_steps={args.steps}",
            "log_every_steps=5",
            "num_threads=1",
        ]
        if opt == "kfac":
            base += ["optimizer.kfac.inverse=cholesky", "optimizer.kfac.factor_samples=256"]
        b = args.batch
        for batch, ranks in ((b // 2, 1), (b // 4, 1), (b, 2), (b, 4)):
            run_trial([*base, f"batch_size={batch}"], uri=uri, out=folder, ranks=ranks, env={})
        client = connect(uri)
        exp = client.get_experiment_by_name(EXPERIMENT)
        assert exp is not None
        points = load_points(client, [exp.experiment_id])
        profile = calibrate([p for p in points if p.world_size <= 2], "mlp-mnist5k")
        print(
            f"\n{opt}: host_cores {profile.host_cores:.3g}, "
            f"forward+backward {profile.train_flops / 1e9:.3g} GFLOP/s, "
            f"overhead {profile.step_overhead_s * 1e3:.3g} ms"
        )
        print("| ranks | global batch | fastest window ms | median ms | predicted ms | error |")
        print("|---|---|---|---|---|---|")
        for p in sorted(points, key=lambda p: (p.world_size, -p.batch_size)):
            pred = predict_step(
                MODELS["mlp-mnist5k"],
                opt,
                p.world_size,
                p.batch_per_rank,
                profile=profile,
                topology="flat",
                link=NETWORKS["local"].link,
                kfac=p.kfac,
            )
            err = pred.total * 1e3 / p.fastest_step_ms - 1
            mark = " (not fitted)" if p.world_size == 4 else ""
            print(
                f"| {p.world_size}{mark} | {p.batch_size} | {p.fastest_step_ms:.1f} | "
                f"{p.step_ms:.1f} | "
                f"{pred.total * 1e3:.1f} | {err:+.0%} |"
            )
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
