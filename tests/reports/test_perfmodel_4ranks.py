"""The performance model's check on this machine: calibrated on 1- and 2-rank runs measured
here, its step time for 4 ranks is within 25 % of a 4-rank run measured right after.

What is compared: the step time of logging windows of 5 steps (forward, backward, all-reduce,
update; evaluation excluded) of data-parallel SGD, MLP on MNIST-5k, global batch 1,024, one
thread per rank, torchrun with gloo on loopback. Calibration uses the fastest window of each 1-
and 2-rank run (the machine least disturbed by other jobs on it); the 4-rank run is compared by
its median window: 4 ranks on 2 cores take turns on the cores, so their windows vary by the OS's
scheduling itself and the fastest one is a lucky draw (in CI runs it was 20-25 % below the
median, which the prediction matched within 8 %). 4 ranks on this 2-core machine are
oversubscribed: the model carries that through ``host_cores``, the cores 2 ranks were measured
to get (below 2 when other work shares the machine), and stretches 4 ranks' work by
``4 / host_cores``. The machine is shared with other jobs whose load changes from second to
second: each run is made twice, interleaved, and its fastest repeat kept; one bad draw is
retried once (all runs again), and the figures of every attempt are in the failure message.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.perfmodel import MODELS, NETWORKS, calibrate, load_points, predict_step
from orchestrator.perfmodel.calibrate import fastest_per_config
from orchestrator.tracking import connect
from tests.reports.record_experiment import EXPERIMENT, run_trial

BASE = [
    "model=mlp",
    "data=mnist5k",
    "optimizer=sgd",
    "schedule=constant",
    "max_steps=60",
    "log_every_steps=5",
    "num_threads=1",
]
TOLERANCE = 0.25


def _attempt(folder: Path) -> tuple[float, float, str]:
    folder.mkdir(parents=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    # One rank at the per-rank batches of the 2- and 4-rank runs, then those runs; everything
    # twice, interleaved, and the fastest repeat of each kept (calibrate does the same).
    for _ in range(2):
        for batch, ranks in ((512, 1), (256, 1), (1024, 2), (1024, 4)):
            run_trial([*BASE, f"batch_size={batch}"], uri=uri, out=folder, ranks=ranks, env={})
    client = connect(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None
    points = fastest_per_config(load_points(client, [exp.experiment_id]))
    four = [p for p in points if p.world_size == 4]
    assert len(four) == 1 and len(points) == 4
    profile = calibrate([p for p in points if p.world_size <= 2], "mlp-mnist5k")
    pred = predict_step(
        MODELS["mlp-mnist5k"],
        "sgd",
        4,
        256,
        profile=profile,
        topology="flat",
        link=NETWORKS["local"].link,
    )
    lines = [
        f"host_cores={profile.host_cores:.3g}, train rate {profile.train_flops / 1e9:.3g} GFLOP/s"
    ]
    lines += [
        f"measured {p.world_size} rank(s), batch {p.batch_size}: fastest window "
        f"{p.fastest_step_ms:.2f} ms, median {p.step_ms:.2f} ms"
        for p in sorted(points, key=lambda p: (p.world_size, p.batch_size))
    ]
    lines.append(f"predicted 4 ranks: {pred.total * 1e3:.2f} ms (stretch {pred.stretch:.2f})")
    return pred.total * 1e3, four[0].step_ms, "\n".join(lines)


def test_four_rank_step_time_is_predicted_within_25_percent(tmp_path: Path) -> None:
    notes = []
    for attempt in range(2):
        predicted, measured, text = _attempt(tmp_path / f"attempt{attempt}")
        error = predicted / measured - 1
        notes.append(f"attempt {attempt}: error {error:+.1%}\n{text}")
        print(notes[-1])
        if abs(error) <= TOLERANCE:
            return
    raise AssertionError("4-rank prediction off by more than 25 %:\n" + "\n\n".join(notes))
