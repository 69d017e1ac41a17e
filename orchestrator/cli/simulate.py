"""``orch simulate`` (a workload through the scheduler on a virtual clock), ``orch clusters`` (the
presets it runs on) and ``orch demo``.

Thin: parses options, calls ``orchestrator.simulate`` / ``orchestrator.demo``, prints.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.exceptions import OrchestratorError
from orchestrator.resources.cluster import Cluster, list_presets, load_cluster
from orchestrator.resources.topology import FlatTopology
from orchestrator.scheduling.policies import ORDERINGS, Backfill

if TYPE_CHECKING:
    from orchestrator.simulate.swf import SwfTrace

__all__ = ["clusters", "demo", "simulate"]

SHIPPED_TRACE = Path(__file__).resolve().parents[1] / "data" / "lublin_256.swf.gz"

err_console = Console(stderr=True)


@contextmanager
def _progress(label: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (shown only on a terminal); yields ``update(done, total)``."""
    if not enabled or not err_console.is_terminal:
        yield lambda done, total: None
        return
    with Progress(
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _parse_window(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    start, sep, length = text.partition(":")
    if not sep or not start.isdigit() or not length.isdigit() or int(length) < 1:
        raise click.BadParameter(
            f"{text!r}: expected START:LEN with integers, for example 0:1024", param_hint="--window"
        )
    return int(start), int(length)


def cluster_for(trace: SwfTrace | None, nodes: int | None, preset: str | None, ppn: int) -> Cluster:
    if nodes is not None and preset is not None:
        raise click.UsageError("give --nodes or --cluster, not both")
    if preset is not None:
        return load_cluster(preset)
    if nodes is None:
        procs = trace.max_procs if trace is not None else None
        if procs is None:
            raise click.UsageError(
                "the trace header has no MaxProcs/MaxNodes: give --nodes N or --cluster PRESET"
            )
        nodes = math.ceil(procs / ppn)
        err_console.print(f"[dim]cluster: {nodes} flat nodes (from the trace header)[/dim]")
    if nodes < 1:
        raise click.BadParameter(f"{nodes}: must be >= 1", param_hint="--nodes")
    return Cluster(name=f"flat{nodes}", topology=FlatTopology(nodes))


def trace_and_cluster_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--trace``, ``--nodes``, ``--cluster`` and ``--procs-per-node`` (``orch simulate``,
    ``orch tune``): the workload and the machine it runs on, see :func:`cluster_for`."""
    options = [
        click.option(
            "--trace",
            type=click.Path(dir_okay=False, path_type=Path),
            help="SWF trace (.swf or .swf.gz). Default: the shipped Lublin 256-node trace.",
        ),
        click.option(
            "--nodes", type=int, help="A flat cluster of N nodes (default: the trace header)."
        ),
        click.option("--cluster", "preset", help=f"A cluster preset: {', '.join(list_presets())}."),
        click.option(
            "--procs-per-node", "ppn", type=click.IntRange(min=1), default=1, show_default=True
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return "-" if value is None else str(value)


@click.command()
@trace_and_cluster_options
@click.option(
    "--order",
    default="fcfs",
    show_default=True,
    help=f"{', '.join(ORDERINGS)}, or tuned:FILE (a policy written by orch tune).",
)
@click.option(
    "--backfill",
    type=click.Choice([b.value for b in Backfill]),
    help="Backfilling mode [default: a tuned policy's own, else easy].",
)
@click.option("--window", help="Only jobs START..START+LEN-1 of the trace, e.g. 0:1024.")
@click.option(
    "--estimate",
    type=click.Choice(["requested", "actual"]),
    default="requested",
    show_default=True,
    help="What the scheduler believes a job's run time is.",
)
@click.option("--no-kill", is_flag=True, help="Let jobs run past their requested time.")
@click.option(
    "--synthetic",
    type=click.IntRange(min=1),
    help="Instead of a trace: N synthetic shaped jobs (needs a torus3d --cluster).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --synthetic.")
@click.option("--load", type=click.FloatRange(min=0.01), default=0.9, show_default=True)
@click.option("--protocol", type=click.Choice(["rlscheduler"]), help="Run an evaluation protocol.")
@click.option("--first", type=click.IntRange(min=1), help="Protocol windows from the first N jobs.")
@click.option(
    "--variant",
    type=click.Choice(["schedgym", "described"]),
    default="schedgym",
    show_default=True,
    help="Protocol only: schedgym = their environment's behaviour (reproduces the published "
    "table); described = the protocol as the traces README states it (see docs/simulation.md).",
)
@click.option(
    "--orders",
    default="fcfs,sjf,f1,wfp3,unicep",
    show_default=True,
    help="Protocol only: the orderings to compare, comma-separated; multifactor and "
    "tuned:FILE too.",
)
@click.option(
    "--backfills",
    default="none,strict,easy,conservative",
    show_default=True,
    help="Protocol only: the backfilling modes to compare, comma-separated.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Per-job records: .csv/.parquet"
)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG figure.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def simulate(
    trace: Path | None,
    nodes: int | None,
    preset: str | None,
    ppn: int,
    order: str,
    backfill: str | None,
    window: str | None,
    estimate: str,
    no_kill: bool,
    synthetic: int | None,
    seed: int,
    load: float,
    protocol: str | None,
    first: int | None,
    variant: str,
    orders: str,
    backfills: str,
    out: Path | None,
    plot: Path | None,
    fmt: str,
) -> None:
    """Replay a workload trace through the scheduler on a virtual clock."""
    from orchestrator.simulate.engine import simulate as run_simulation
    from orchestrator.simulate.plots import plot_schedule
    from orchestrator.simulate.swf import read_swf
    from orchestrator.simulate.workload import synthetic_torus_workload, workload_from_swf

    if out is not None and out.suffix not in {".csv", ".parquet"}:
        raise click.BadParameter(f"{out}: use a .csv or .parquet file name", param_hint="--out")
    backfill = resolve_backfill(order, backfill)
    try:
        parsed: SwfTrace | None = None
        if synthetic is None:
            parsed = read_swf(trace or SHIPPED_TRACE)
        cluster = cluster_for(parsed, nodes, preset, ppn)
        if protocol == "rlscheduler":
            assert parsed is not None
            _simulate_protocol(parsed, cluster, first, ppn, orders, backfills, variant, plot, fmt)
            return
        if synthetic is not None:
            jobs = synthetic_torus_workload(cluster, synthetic, seed=seed, load=load)
            skipped: list[Any] = []
            source = f"synthetic({synthetic}, seed={seed}, load={load})"
        else:
            assert parsed is not None
            jobs, skipped = workload_from_swf(
                parsed,
                cluster,
                procs_per_node=ppn,
                window=_parse_window(window),
                estimate="requested" if estimate == "requested" else "actual",
            )
            source = parsed.path
        with _progress("jobs") as update:
            result = run_simulation(
                cluster,
                jobs,
                order=order,
                backfill=backfill,
                kill_at_walltime=not no_kill,
                skipped=skipped,
                progress=update,
            )
    except (OrchestratorError, FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    if out is not None:
        _write_records(result.jobs, out)
    if plot is not None:
        plot_schedule(result, cluster.size, plot)
    summary: dict[str, Any] = {
        "trace": source,
        "cluster": cluster.name,
        "nodes": cluster.size,
        "order": order,
        "backfill": backfill,
        **result.summary(),
    }
    if fmt == "json":
        click.echo(json.dumps(summary))
        return
    table = Table(title=f"simulation of {source}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        table.add_row(key, _fmt(value))
    Console().print(table)
    for job in skipped[:5]:
        err_console.print(f"[yellow]skipped job {job.job_id}: {job.reason}[/yellow]")
    if len(skipped) > 5:
        err_console.print(f"[yellow]... and {len(skipped) - 5} more skipped jobs[/yellow]")


def resolve_backfill(order: str, backfill: str | None) -> str:
    """The backfilling mode given, else a tuned policy's own, else EASY; a bad order is a
    usage error naming ``--order``."""
    from orchestrator.scheduling.tuned import resolve_order

    try:
        return resolve_order(order, backfill)[1].value
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--order") from e


def _write_records(jobs: Any, out: Path) -> None:
    """The per-job records as ``.parquet`` or ``.csv`` (by the file name)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        jobs.to_parquet(out)
    else:
        jobs.to_csv(out, index=False)


def _simulate_protocol(
    parsed: SwfTrace,
    cluster: Cluster,
    first: int | None,
    ppn: int,
    orders: str,
    backfills: str,
    variant: str,
    plot: Path | None,
    fmt: str,
) -> None:
    """``--protocol rlscheduler``: RLScheduler's windows of the trace, per backfilling mode."""
    from orchestrator.simulate.plots import plot_protocol
    from orchestrator.simulate.protocol import rlscheduler_protocol

    modes = []
    for name in backfills.split(","):
        if name.strip() not in {b.value for b in Backfill}:
            raise click.BadParameter(
                f"{name!r} is not one of none, easy, conservative, strict",
                param_hint="--backfills",
            )
        modes.append(Backfill(name.strip()))
    with _progress("windows") as update:
        rows = rlscheduler_protocol(
            parsed,
            cluster,
            first=first,
            procs_per_node=ppn,
            orders=[o.strip() for o in orders.split(",") if o.strip()],
            backfills=modes,
            variant="schedgym" if variant == "schedgym" else "described",
            progress=update,
        )
    if plot is not None:
        plot_protocol(rows, plot)
    _print_protocol(rows, fmt)


def _print_protocol(rows: list[Any], fmt: str) -> None:
    if fmt == "json":
        click.echo(
            json.dumps(
                [
                    {
                        "order": r.order,
                        "backfill": r.backfill,
                        "mean_bsld": r.mean_bsld,
                        "utilization": r.utilization,
                        "published_bsld": r.published_bsld,
                    }
                    for r in rows
                ]
            )
        )
        return
    table = Table(title="RLScheduler protocol: mean bounded slowdown, 10 windows x 1,024 jobs")
    for column in ("order", "backfill", "mean bsld", "published bsld", "utilization"):
        table.add_column(column, justify="left" if column in ("order", "backfill") else "right")
    for r in rows:
        table.add_row(
            r.order,
            r.backfill,
            f"{r.mean_bsld:.2f}",
            _fmt(r.published_bsld),
            f"{r.utilization:.3f}",
        )
    Console().print(table)


@click.command()
def clusters() -> None:
    """List the cluster presets of conf/cluster/."""
    table = Table(title="cluster presets")
    table.add_column("name")
    table.add_column("topology")
    table.add_column("node")
    for name in list_presets():
        cluster = load_cluster(name)
        node = cluster.node
        table.add_row(
            name,
            cluster.topology.describe(),
            f"{node.cpus} CPUs, {node.gpus} GPUs, {node.memory_mb} MB",
        )
    Console().print(table)


@click.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
)
def demo(out: Path) -> None:
    """The main job on the embedded default: the scheduler in simulation (shipped trace, Fugaku
    torus), then the kfac_vs_sgd sweep through hydra/launcher=orch, compared from MLflow;
    everything is written to OUT."""
    from orchestrator.demo import run_demo

    try:
        run_demo(out, Console())
    except OrchestratorError as e:
        raise click.ClickException(str(e)) from e
