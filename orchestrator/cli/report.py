"""``orch report`` and ``orch predict``: the end of a sweep, and the model that carries it past
this machine. Thin: parse, call ``orchestrator.reports`` / ``orchestrator.perfmodel``, print."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table

from orchestrator.exceptions import OrchestratorError

if TYPE_CHECKING:
    from orchestrator.perfmodel.calibrate import RunPoint

__all__ = ["predict", "report"]

_URI_HELP = "MLflow store: sqlite:///ABS/mlflow.db or http://127.0.0.1:PORT (default: ./mlflow.db)."


@click.command()
@click.option("--experiment", required=True, help="MLflow experiment (a sweep preset's name).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for index.html and the PNGs (default: report-<experiment>).",
)
@click.option("--tracking-uri", default=None, help=_URI_HELP)
@click.option("--parent-run", default=None, help="Attach to this run (default: newest sweep).")
@click.option("--no-log", is_flag=True, help="Write the files only; log nothing to MLflow.")
def report(
    experiment: str,
    out: Path | None,
    tracking_uri: str | None,
    parent_run: str | None,
    no_log: bool,
) -> None:
    """Write the scaling and generalisation report of an EXPERIMENT (HTML with PNG figures) and
    log it on the sweep's parent run."""
    from orchestrator.reports import write_report

    if tracking_uri is None and not _default_store_exists():
        raise click.ClickException(
            "no ./mlflow.db here and no MLFLOW_TRACKING_URI: run from the folder the sweep "
            "logged to, or give --tracking-uri sqlite:///ABS/mlflow.db (or http://HOST:PORT)"
        )
    target = out or Path(f"report-{experiment}")
    try:
        done = write_report(experiment, target, tracking_uri, parent_run, log_artifact=not no_log)
    except (LookupError, OrchestratorError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"report: {done.index}")
    if done.logged_to:
        click.echo(f"logged as artifacts report/ of run {done.logged_to}")
    else:
        click.echo("not logged: no sweep parent run in this experiment (tag orch.role=sweep)")


def _nodes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise click.BadParameter(
            f"{text!r}: expected node counts >= 1 separated by commas, for example 1,2,4,1024",
            param_hint="--nodes",
        )
    return values


@click.command()
@click.option("--model", default="mlp-mnist5k", show_default=True, help="Model preset.")
@click.option("--cluster", default="fugaku", show_default=True, help="Cluster preset or YAML.")
@click.option(
    "--optimizer",
    type=click.Choice(["sgd", "kfac", "both"]),
    default="both",
    show_default=True,
)
@click.option(
    "--nodes", default=None, help="Node counts, e.g. 1,2,4 (default: 1, 2, 4, ... 80000)."
)
@click.option("--batch-per-node", type=click.IntRange(min=1), default=None, help="Weak scaling.")
@click.option("--global-batch", type=click.IntRange(min=1), default=None, help="Strong scaling.")
@click.option("--tracking-uri", default=None, help=_URI_HELP)
@click.option(
    "--experiment",
    "experiments",
    multiple=True,
    help="Experiments to calibrate on and to take measured points from (repeatable; default: all).",
)
@click.option("--calibrate-on", default=None, help="Model preset of the calibration runs.")
@click.option("--no-calibrate", is_flag=True, help="Use the default profile; read no runs.")
@click.option("--node-tflops", type=float, default=None, help="Override a node's TFLOP/s.")
@click.option("--alpha-us", type=float, default=None, help="Override the link latency (us).")
@click.option("--beta-gbps", type=float, default=None, help="Override the link bandwidth (GB/s).")
@click.option("--factor-interval", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--inverse-interval", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--factor-samples", type=click.IntRange(min=1), default=None)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def predict(
    model: str,
    cluster: str,
    optimizer: str,
    nodes: str | None,
    batch_per_node: int | None,
    global_batch: int | None,
    tracking_uri: str | None,
    experiments: tuple[str, ...],
    calibrate_on: str | None,
    no_calibrate: bool,
    node_tflops: float | None,
    alpha_us: float | None,
    beta_gbps: float | None,
    factor_interval: int,
    inverse_interval: int,
    factor_samples: int | None,
    fmt: str,
) -> None:
    """Predict SGD and K-FAC step time, throughput and efficiency on N nodes of a preset,
    calibrated on runs in MLflow, with the measured points beside."""
    from orchestrator.perfmodel import MODELS, KfacSchedule
    from orchestrator.perfmodel.predict import (
        LEFT_OUT,
        batch_warnings,
        calibrated_machine,
        default_nodes,
        prediction_rows,
        shows_measured,
    )
    from orchestrator.resources.cluster import load_cluster

    if model not in MODELS:
        raise click.BadParameter(
            f"{model!r}: expected one of {', '.join(sorted(MODELS))}", param_hint="--model"
        )
    if batch_per_node is not None and global_batch is not None:
        raise click.UsageError("give --batch-per-node or --global-batch, not both")
    if batch_per_node is None and global_batch is None:
        batch_per_node = 256
    try:
        target = load_cluster(cluster)
        local = load_cluster("local")
    except OrchestratorError as e:
        raise click.ClickException(str(e)) from e
    if tracking_uri is None and not _default_store_exists():
        no_calibrate = True  # nothing logged here: do not create an empty store
    points = [] if no_calibrate else _measured_points(tracking_uri, experiments)
    try:
        machine = calibrated_machine(
            target,
            points,
            calibrate_on=calibrate_on,
            cores=local.node.cpus,
            node_tflops=node_tflops,
            alpha_us=alpha_us,
            beta_gbps=beta_gbps,
        )
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    prof, net, calibrated_on = machine.profile, machine.network, machine.calibrated_on
    opts = ["sgd", "kfac"] if optimizer == "both" else [optimizer]
    wanted = _nodes(nodes) or default_nodes(target.size)
    beside = points if shows_measured(target.name) else []
    try:
        rows = prediction_rows(
            model=model,
            cluster=target,
            profile=prof,
            network=net,
            optimizers=opts,
            nodes=wanted,
            batch_per_node=batch_per_node,
            global_batch=global_batch,
            kfac=KfacSchedule(factor_interval, inverse_interval, factor_samples),
            measured=beside,
        )
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    if fmt == "json":
        document = {
            "profile": asdict(prof),
            "rows": [asdict(r) for r in rows],
            "warnings": batch_warnings(rows, model),
            "left_out": LEFT_OUT,
        }
        click.echo(json.dumps(document))
        return
    console = Console() if Console().is_terminal else Console(width=160)
    source = (
        f"calibrated on {calibrated_on} ({prof.calibrated_from})"
        if calibrated_on
        else ("uncalibrated defaults (no 1-rank runs found)")
    )
    console.print(
        f"{model} on {target.name} ({target.size} nodes, {net.source}); profile {source}; "
        f"link alpha {net.link.alpha_s * 1e6:.3g} us, {1e-9 / net.link.beta_s_per_byte:.3g} GB/s",
        soft_wrap=True,
    )
    table = Table()
    for col in (
        "optimizer",
        "nodes",
        "batch/node",
        "global batch",
        "step ms",
        "compute",
        "K-FAC",
        "comm",
        "samples/s",
        "efficiency",
        "measured samples/s",
        "measured step ms",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r.optimizer,
            f"{r.nodes:,}",
            f"{r.batch_per_node:.4g}",
            f"{r.global_batch:,.0f}",
            f"{r.step_ms:.4g}",
            f"{r.compute_ms:.3g}",
            f"{r.kfac_ms:.3g}",
            f"{r.comm_ms:.3g}",
            f"{r.samples_per_s:,.0f}",
            f"{r.efficiency:.3f}",
            "-" if r.measured_samples_per_s is None else f"{r.measured_samples_per_s:,.0f}",
            "-" if r.measured_step_ms is None else f"{r.measured_step_ms:.4g}",
        )
    console.print(table)
    for warning in batch_warnings(rows, model):
        console.print(f"warning: {warning}", soft_wrap=True)
    console.print(LEFT_OUT, soft_wrap=True)
    if not beside and points:
        console.print(
            f"measured points are from this machine: see them with --cluster local "
            f"(--model {calibrated_on or model})"
        )


def _measured_points(tracking_uri: str | None, experiments: tuple[str, ...]) -> list[RunPoint]:
    """The runs' measured points of ``experiments`` (all experiments when none is named)."""
    from orchestrator.perfmodel import load_points
    from orchestrator.tracking import connect, default_tracking_uri

    client = connect(tracking_uri or default_tracking_uri())
    if experiments:
        ids = []
        for name in experiments:
            found = client.get_experiment_by_name(name)
            if found is None:
                raise click.BadParameter(f"no experiment {name!r}", param_hint="--experiment")
            ids.append(found.experiment_id)
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    return load_points(client, ids)


def _default_store_exists() -> bool:
    """Runs to read without --tracking-uri: MLflow's own variable, or ./mlflow.db."""
    return bool(os.environ.get("MLFLOW_TRACKING_URI")) or Path("mlflow.db").exists()
