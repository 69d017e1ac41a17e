"""``orch demo``: what the README's first command runs on a fresh machine.

Phases, one function each (a later phase may be added at the end of :func:`run_demo`):

1. :func:`simulation_phase`: the scheduling core in simulation: RLScheduler's protocol on the
   shipped Lublin trace (published figures beside ours), and shaped jobs on the Fugaku torus.
2. :func:`sweep_phase`: the main job: ``python -m sweeps.train -m experiment=kfac_vs_sgd
   hydra/launcher=orch`` (SGD versus K-FAC x batch size x nodes, 12 data-parallel training jobs)
   on the embedded scheduler, every trial logged to MLflow under one parent run.
3. :func:`print_comparison`: the comparison table, read back from MLflow (not from the jobs'
   return values): accuracy, steps and time to the target accuracy per configuration.

Everything is written under ``out``: figures, ``demo.json``, the sweep folder, ``mlflow.db``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from orchestrator.exceptions import OrchestratorError
from orchestrator.resources.cluster import Cluster, load_cluster
from orchestrator.resources.topology import FlatTopology
from orchestrator.scheduling.policies import Backfill
from orchestrator.simulate.engine import simulate
from orchestrator.simulate.plots import plot_protocol, plot_schedule
from orchestrator.simulate.protocol import rlscheduler_protocol
from orchestrator.simulate.swf import read_swf
from orchestrator.simulate.workload import synthetic_torus_workload

__all__ = [
    "SweepRow",
    "print_comparison",
    "read_sweep",
    "run_demo",
    "simulation_phase",
    "sweep_phase",
]

SHIPPED_TRACE = Path(__file__).resolve().parent / "data" / "lublin_256.swf.gz"
EXPERIMENT = "kfac_vs_sgd"


def run_demo(out: Path, console: Console) -> None:
    """Run the demo, print its tables to ``console`` and write figures and data under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    summary = simulation_phase(out, console)
    tracking_uri = f"sqlite:///{out / 'mlflow.db'}"
    sweep_phase(out, console, tracking_uri)
    rows = print_comparison(console, tracking_uri, EXPERIMENT)
    summary["kfac_vs_sgd"] = [asdict(r) for r in rows]
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    console.print(f"numbers: {out / 'demo.json'}; MLflow store: {tracking_uri}")
    from orchestrator.reports import write_report  # the report, logged on the sweep's parent run

    report = write_report(EXPERIMENT, out / "report", tracking_uri)
    console.print(f"report: {report.index} (also in MLflow, run {report.logged_to}, report/)")


def simulation_phase(out: Path, console: Console) -> dict[str, Any]:
    """The scheduler in simulation (about 20 s); returns its numbers, writes two figures."""
    trace = read_swf(SHIPPED_TRACE)
    cluster = Cluster("lublin256", FlatTopology(256))
    console.print("[bold]1/3[/bold] RLScheduler protocol on the shipped Lublin-256 trace ...")
    # Conservative backfilling is in benchmarks/README.md; it takes minutes, the rest seconds.
    # The schedgym variant behaves as their environment's code: it gives the published table.
    rows = rlscheduler_protocol(
        trace,
        cluster,
        backfills=(Backfill.NONE, Backfill.STRICT, Backfill.EASY),
        variant="schedgym",
    )
    table = Table(title="mean bounded slowdown, 10 windows x 1,024 jobs (lower is better)")
    for column in ("order", "backfill", "ours", "published", "utilization"):
        table.add_column(column, justify="left" if column in ("order", "backfill") else "right")
    for r in rows:
        published = "-" if r.published_bsld is None else f"{r.published_bsld:.2f}"
        table.add_row(r.order, r.backfill, f"{r.mean_bsld:.2f}", published, f"{r.utilization:.3f}")
    console.print(table)
    protocol_png = plot_protocol(rows, out / "rlscheduler_lublin256.png")

    fugaku = load_cluster("fugaku")
    console.print("    and 500 shaped jobs on the Fugaku torus (FCFS + EASY) ...")
    jobs = synthetic_torus_workload(fugaku, 500, seed=0, load=0.9)
    result = simulate(fugaku, jobs, order="fcfs", backfill="easy")
    schedule_png = plot_schedule(
        result, fugaku.size, out / "fugaku_synthetic.png", title="Fugaku, 500 synthetic jobs"
    )
    summary = result.summary()
    table = Table(title=f"Fugaku ({fugaku.topology.describe()}), FCFS + EASY")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"figures: {protocol_png}, {schedule_png}")
    return {"rlscheduler_protocol": [r.__dict__ for r in rows], "fugaku_synthetic": summary}


def sweep_phase(
    out: Path, console: Console, tracking_uri: str, overrides: Sequence[str] = ()
) -> Path:
    """Run the ``kfac_vs_sgd`` sweep through the ``orch`` launcher (embedded scheduler).

    Args:
        out: The demo folder: the sweep folder is ``out/kfac_vs_sgd``, its log
            ``out/kfac_vs_sgd.log``.
        console: Where progress goes.
        tracking_uri: The MLflow store of the trials.
        overrides: Extra Hydra overrides (tests shrink the sweep with them).

    Returns:
        The sweep folder.

    Raises:
        OrchestratorError: the sweep failed (the message quotes the end of its log).
    """
    sweep_dir = out / EXPERIMENT
    log_path = out / f"{EXPERIMENT}.log"
    argv = [
        sys.executable,
        "-m",
        "sweeps.train",
        "-m",
        f"experiment={EXPERIMENT}",
        "hydra/launcher=orch",
        f"tracking.uri={tracking_uri}",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
    ]
    console.print(
        "[bold]2/3[/bold] the main job: python -m sweeps.train -m experiment=kfac_vs_sgd "
        "hydra/launcher=orch\n    SGD vs K-FAC x batch 64/256/1024 x 1/2 nodes, 12 "
        f"data-parallel jobs on the embedded scheduler (log: {log_path}) ..."
    )
    start = time.monotonic()
    with open(log_path, "w") as log:
        # The jobs write checkpoints under the working directory: keep them in the demo folder.
        proc = subprocess.run(argv, cwd=out, stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise OrchestratorError(
            f"the sweep failed (exit {proc.returncode}); end of {log_path}:\n{tail}"
        )
    console.print(f"    done in {time.monotonic() - start:.0f} s")
    return sweep_dir


@dataclass(frozen=True)
class SweepRow:
    """One trial of the sweep as MLflow has it."""

    optimizer: str
    batch_size: int
    world_size: int
    val_accuracy: float | None
    steps_to_target: float | None
    time_to_target_s: float | None
    train_time_s: float | None
    samples_per_sec: float | None
    status: str


def read_sweep(tracking_uri: str, experiment: str) -> tuple[dict[str, Any], list[SweepRow]]:
    """The latest sweep of ``experiment``: its parent run's summary and its trials' rows.

    Raises:
        OrchestratorError: no sweep of that experiment in the store.
    """
    from orchestrator.tracking import connect

    client = connect(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    parents = (
        client.search_runs(
            [exp.experiment_id],
            "tags.`orch.role` = 'sweep'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if exp is not None
        else []
    )
    if not parents:
        raise OrchestratorError(f"no sweep of experiment {experiment!r} in {tracking_uri}")
    assert exp is not None
    parent = parents[0]
    children = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    rows = []
    for run in children:
        m, p, tags = run.data.metrics, run.data.params, run.data.tags
        rows.append(
            SweepRow(
                optimizer=p.get("optimizer.name", tags.get("optimizer", "?")),
                batch_size=int(p.get("batch_size", 0)),
                world_size=int(tags.get("world_size", 1)),
                val_accuracy=m.get("final_val_accuracy", m.get("val_accuracy")),
                steps_to_target=m.get("steps_to_target"),
                time_to_target_s=m.get("time_to_target_s"),
                train_time_s=m.get("train_time_s"),
                samples_per_sec=m.get("samples_per_sec"),
                status=tags.get("status", run.info.status),
            )
        )
    rows.sort(key=lambda r: (r.batch_size, r.world_size, r.optimizer))
    summary = {"run_id": parent.info.run_id, "name": parent.info.run_name, **parent.data.metrics}
    return summary, rows


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_comparison(console: Console, tracking_uri: str, experiment: str) -> list[SweepRow]:
    """Print the K-FAC versus SGD table of the latest sweep, read back from MLflow."""
    console.print("[bold]3/3[/bold] comparison, read back from MLflow ...")
    summary, rows = read_sweep(tracking_uri, experiment)
    table = Table(
        title="K-FAC vs SGD: steps and train time to the target",
        caption=f"MLflow parent run {summary['name']}",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
    )
    columns = (
        "batch",
        "nodes",
        "opt",
        "val acc",
        "steps",
        "time s",
        "train s",
        "status",
    )
    for column in columns:
        table.add_column(column, justify="left" if column in ("opt", "status") else "right")
    for r in rows:
        table.add_row(
            str(r.batch_size),
            str(r.world_size),
            r.optimizer,
            _fmt(r.val_accuracy, ".3f"),
            _fmt(r.steps_to_target, ".0f"),
            _fmt(r.time_to_target_s, ".2f"),
            _fmt(r.train_time_s, ".2f"),
            r.status,
        )
    console.print(table)
    counts = ", ".join(
        f"{k.removeprefix('n_')} {int(v)}" for k, v in summary.items() if k.startswith("n_")
    )
    console.print(f"sweep: {counts}")
    return rows
