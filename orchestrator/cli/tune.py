"""``orch tune``: search a scheduling policy on a trace's own jobs and write it as YAML.

Thin: parses options, calls :func:`orchestrator.simulate.tune.tune`, prints and saves.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from orchestrator.cli.simulate import (
    SHIPPED_TRACE,
    cluster_for,
    err_console,
    trace_and_cluster_options,
)
from orchestrator.exceptions import OrchestratorError
from orchestrator.scheduling.policies import Backfill

__all__ = ["tune"]


@click.command()
@trace_and_cluster_options
@click.option(
    "--first", type=click.IntRange(min=1), help="Evaluation windows from the first N jobs."
)
@click.option(
    "--family",
    type=click.Choice(["score", "multifactor"]),
    default="score",
    show_default=True,
    help="score: weighted logs of run time, size, submit time, wait and slowdown; "
    "multifactor: Slurm's priority weights (see docs/simulation.md).",
)
@click.option(
    "--backfill",
    type=click.Choice(["strict", "easy", "conservative", "search"]),
    default="strict",
    show_default=True,
    help="The backfilling mode, or `search` to tune it too.",
)
@click.option(
    "--start",
    default=None,
    help="Starting point, tried first: sjf (default), fcfs or f1 for score; multifactor.",
)
@click.option("--sampler", type=click.Choice(["tpe", "cmaes"]), default="tpe", show_default=True)
@click.option("--trials", type=click.IntRange(min=1), help="Stop after N trials.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1),
    default=600.0,
    show_default=True,
    help="Seconds of search (trials in progress finish).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Sampler and bootstrap seed.")
@click.option("--training-windows", type=click.IntRange(min=1), default=12, show_default=True)
@click.option("--block", type=click.IntRange(min=1), default=128, show_default=True)
@click.option(
    "--prune/--no-prune",
    default=False,
    show_default=True,
    help="Stop a trial early when its first windows score worse than the median trial's.",
)
@click.option(
    "--variant", type=click.Choice(["schedgym", "described"]), default="schedgym", show_default=True
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("tuned-policy.yaml"),
    show_default=True,
    help="Where to write the policy (use it with --order tuned:FILE).",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def tune(
    trace: Path | None,
    nodes: int | None,
    preset: str | None,
    ppn: int,
    first: int | None,
    family: str,
    backfill: str,
    start: str | None,
    sampler: str,
    trials: int | None,
    timeout_s: float,
    seed: int,
    training_windows: int,
    block: int,
    prune: bool,
    variant: str,
    out: Path,
    fmt: str,
) -> None:
    """Tune a scheduling policy on a trace's own jobs (kept apart from the evaluation windows
    of RLScheduler's protocol), then score it on those windows beside its starting point."""
    from orchestrator.scheduling.tuned import save_policy
    from orchestrator.simulate.swf import read_swf
    from orchestrator.simulate.tune import TuneProgress, TuneSpec
    from orchestrator.simulate.tune import tune as run_tune

    try:
        spec = TuneSpec(
            family="score" if family == "score" else "multifactor",
            backfill=None if backfill == "search" else Backfill(backfill),
            start=start or ("sjf" if family == "score" else "multifactor"),
            sampler="cmaes" if sampler == "cmaes" else "tpe",
            trials=trials,
            timeout_s=timeout_s,
            seed=seed,
            training_windows=training_windows,
            block=block,
            prune=prune,
            variant="schedgym" if variant == "schedgym" else "described",
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from e

    def show(p: TuneProgress) -> None:
        if p.trial == 1 or p.trial % 10 == 0 or p.value <= p.best:
            err_console.print(
                f"[dim]trial {p.trial}: {p.value:.2f} (best {p.best:.2f}) "
                f"at {p.elapsed_s:.0f} s[/dim]"
            )

    try:
        parsed = read_swf(trace or SHIPPED_TRACE)
        cluster = cluster_for(parsed, nodes, preset, ppn)
        policy = run_tune(parsed, cluster, spec, first=first, procs_per_node=ppn, progress=show)
        save_policy(policy, out)
    except (OrchestratorError, FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    if fmt == "json":
        click.echo(json.dumps(policy.to_document()))
        return
    search = policy.origin["search"]
    title = f"mean bounded slowdown, {policy.family} family, {policy.backfill} backfill"
    table = Table(title=title)
    for column in ("policy", "training", "evaluation"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for label, row in (
        (f"start ({policy.scores['start']['name']})", policy.scores["start"]),
        ("tuned", policy.scores["tuned"]),
    ):
        table.add_row(label, f"{row['training']:.2f}", f"{row['evaluation']:.2f}")
    Console().print(table)
    weights = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in policy.weights.items()
    )
    click.echo(f"weights: {weights}")
    click.echo(
        f"{search['trials']} trials ({search['pruned']} stopped early) in {search['wall_s']:.0f} s "
        f"({search['cpu_s']:.0f} s CPU); "
        f"written to {out}: use it with --order tuned:{out}"
    )
