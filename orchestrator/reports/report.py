"""``write_report``: an experiment's scaling and generalisation report, as HTML with PNG figures,
logged as an artifact of the sweep's parent run so it shows in the MLflow UI.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from orchestrator.reports import analysis, figures
from orchestrator.tracking import connect, default_tracking_uri

__all__ = ["ARTIFACT_PATH", "Report", "write_report"]

#: Where the report lands among the parent run's artifacts.
ARTIFACT_PATH = "report"


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote."""

    index: Path
    figures: tuple[Path, ...]
    logged_to: str | None
    tables: dict[str, pd.DataFrame]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}"
    return str(value)


def _table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p class='none'>no runs for this table</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
        for row in df.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


_CSS = """
body { font-family: sans-serif; margin: 2em; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th { background: #eee; } img { max-width: 100%; } .none { color: #888; }
"""


def _pick_parent(runs: pd.DataFrame, parent_run_id: str | None) -> str | None:
    if parent_run_id is not None:
        if parent_run_id not in set(runs["run_id"]):
            raise LookupError(
                f"parent run {parent_run_id!r} is not in this experiment; pass one of its sweep "
                "runs (tag orch.role=sweep) or leave it out to use the newest sweep"
            )
        return parent_run_id
    parents = analysis.sweep_parents(runs)
    return None if parents.empty else str(parents.iloc[0]["run_id"])


def write_report(
    experiment: str,
    out: Path,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    *,
    log_artifact: bool = True,
) -> Report:
    """Write the report of an experiment and log it on the sweep's parent run.

    Args:
        experiment: The MLflow experiment (a sweep preset's name, e.g. ``kfac_vs_sgd``).
        out: Folder for ``index.html`` and the PNGs (created).
        tracking_uri: The store; default ``sqlite:///<cwd>/mlflow.db``.
        parent_run_id: The parent run to attach the report to; default the experiment's newest
            sweep parent (``orch.role=sweep``); none: the report is only written.
        log_artifact: Log the folder as artifacts under ``report/`` of that run.

    Returns:
        The files written and the run they were logged to.

    Raises:
        LookupError: When the experiment, or the given parent run, does not exist.
    """
    uri = tracking_uri or default_tracking_uri()
    runs = analysis.load_runs(experiment, uri)
    t = analysis.trials(runs)
    tables = {
        "scaling": analysis.scaling_table(t),
        "batch": analysis.batch_table(t),
        "verdict": pd.DataFrame(),
        "generalisation": analysis.generalisation_table(t),
        "diverged": analysis.diverged_runs(t),
        "pareto": analysis.pareto_front(t),
        "best": analysis.best_table(t),
    }
    tables["verdict"] = analysis.verdict_table(tables["batch"])
    out.mkdir(parents=True, exist_ok=True)
    drawn = {
        "scaling.png": figures.scaling_figure(tables["scaling"]),
        "batch_size.png": figures.batch_figure(tables["batch"]),
        "generalisation.png": figures.generalisation_figure(tables["generalisation"]),
        "pareto.png": figures.pareto_figure(tables["pareto"]),
    }
    paths = []
    for name, fig in drawn.items():
        fig.savefig(out / name, dpi=100)
        paths.append(out / name)
    parent = _pick_parent(runs, parent_run_id)
    index = out / "index.html"
    index.write_text(_render(out, experiment, uri, runs, t, tables, parent))
    logged = None
    if log_artifact and parent is not None:
        connect(uri).log_artifacts(parent, str(out), artifact_path=ARTIFACT_PATH)
        logged = parent
    return Report(index, tuple(paths), logged, tables)


def _render(
    out: Path,
    experiment: str,
    uri: str,
    runs: pd.DataFrame,
    t: pd.DataFrame,
    tables: dict[str, pd.DataFrame],
    parent: str | None,
) -> str:
    e = html.escape
    n_sweeps = len(analysis.sweep_parents(runs))
    sections = [
        (
            "1. Scaling",
            "scaling.png",
            "Throughput (median over runs of the last window's samples/s) and strong-scaling "
            "efficiency, throughput(N) / (N x throughput(1)), against nodes at a fixed global "
            "batch, per optimizer.",
            tables["scaling"],
        ),
        (
            "2. Steps and time to target against batch size",
            "batch_size.png",
            "Log-log, as Shallue et al. (2019) plot them: perfect scaling halves the steps when "
            "the batch doubles; the curve flattens where larger batches stop paying.",
            tables["batch"],
        ),
        (
            "3. Generalisation",
            "generalisation.png",
            "Final train accuracy (the final model on the whole training set) and validation "
            "accuracy, and their gap, against batch size; runs that diverged are left out "
            "(listed below the table).",
            tables["generalisation"],
        ),
        (
            "4. NAS Pareto front",
            "pareto.png",
            "Validation accuracy against inference latency; a trial is on the front when no "
            "other is both as accurate and as fast, and better in one.",
            tables["pareto"],
        ),
    ]
    body = [
        f"<h1>Report: experiment {e(experiment)}</h1>",
        f"<p>{len(t)} finished trials, {n_sweeps} sweeps, tracking store {e(uri)}; "
        f"written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        + (f"; attached to parent run {e(parent)}" if parent else "")
        + ".</p>",
        "<h2>Verdict</h2>",
        f"<p class='verdict'>{e(analysis.verdict_sentence(tables['verdict']))}</p>",
        "<p>Per batch size: the median steps and seconds to the target accuracy of each "
        "optimizer, which got there first, and by how much (the slower's over the faster's).</p>",
        _table(tables["verdict"]),
    ]
    for title, png, text, table in sections:
        # Inline (a data URI) so the page is whole on its own, e.g. in MLflow's artifact
        # preview, which shows one file; the PNG files are written beside it as well.
        data = base64.b64encode((out / png).read_bytes()).decode()
        body += [
            f"<h2>{e(title)}</h2>",
            f"<p>{e(text)}</p>",
            f'<img src="data:image/png;base64,{data}" alt="{e(title)}" data-file="{png}">',
        ]
        body.append(_table(table))
        if png == "generalisation.png" and not tables["diverged"].empty:
            body += [
                f"<p class='note'>{len(tables['diverged'])} diverged runs are left out of the "
                "gap (a non-finite loss, a final loss above that of a uniform guess, or an "
                "accuracy near chance):</p>",
                _table(tables["diverged"]),
            ]
    body += ["<h2>5. Best configurations</h2>", _table(tables["best"])]
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{e(experiment)} report</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
