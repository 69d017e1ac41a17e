"""Scaling and generalisation reports from MLflow runs (``orch report``).

``write_report`` reads an experiment's runs (sweep parents and their nested trials), draws the
figures, writes ``index.html`` beside them and logs the folder on the sweep's parent run. The
tables and figures are public so notebooks (``notebooks/``) can do the same analysis.
"""

from __future__ import annotations

from orchestrator.reports.analysis import (
    batch_table,
    best_table,
    diverged_runs,
    generalisation_table,
    load_runs,
    pareto_front,
    scaling_table,
    sweep_parents,
    trials,
    verdict_sentence,
    verdict_table,
)
from orchestrator.reports.figures import (
    batch_figure,
    generalisation_figure,
    pareto_figure,
    scaling_figure,
)
from orchestrator.reports.report import ARTIFACT_PATH, Report, write_report

__all__ = [
    "ARTIFACT_PATH",
    "Report",
    "batch_figure",
    "batch_table",
    "best_table",
    "diverged_runs",
    "generalisation_figure",
    "generalisation_table",
    "load_runs",
    "pareto_figure",
    "pareto_front",
    "scaling_figure",
    "scaling_table",
    "sweep_parents",
    "trials",
    "verdict_sentence",
    "verdict_table",
    "write_report",
]
