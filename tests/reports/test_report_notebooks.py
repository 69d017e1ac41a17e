"""Both notebooks run top to bottom (nbclient, a real kernel) against the recorded experiment,
pointed at it through the environment their parameters cell reads."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.reports.record_experiment import Recorded

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@pytest.mark.parametrize("name", ["scaling", "generalization"])
def test_notebook_runs_on_the_recorded_experiment(
    name: str, recorded: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_TRACKING_URI", recorded.uri)
    monkeypatch.setenv("ORCH_EXPERIMENT", recorded.experiment)
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute(env=dict(os.environ))
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert len(images) >= (1 if name == "scaling" else 3)
    assert len(tables) >= 3
    text = "\n".join(str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    if name == "scaling":
        assert "80000" in text  # the Fugaku prediction reaches 80,000 nodes
    else:
        assert "True" in text  # a Pareto-optimal NAS trial
