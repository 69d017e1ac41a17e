"""The MLflow UI of the recorded experiment in headless Chromium: the sweep's parent run with
its nested trials expanded, and the report among the parent's artifacts; screenshots are kept
under test-artifacts/."""

from __future__ import annotations

from pathlib import Path

from orchestrator.reports import load_runs, sweep_parents, write_report
from tests.reports.record_experiment import Recorded
from tests.reports.webdriver_lite import Browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

_EXPAND = """
const link = [...document.querySelectorAll('a')].find(a => a.innerText.includes(arguments[0]));
let row = link;
while (row && row.getAttribute('role') !== 'row') row = row.parentElement;
if (!row) return false;
const button = row.querySelector('button');
if (!button) return false;
button.click();
return true;
"""


def test_ui_shows_nested_trials_and_the_report(
    recorded: Recorded, mlflow_server: str, tmp_path: Path
) -> None:
    runs = load_runs(recorded.experiment, recorded.uri)
    parents = sweep_parents(runs)
    parent = parents[parents["tags.orch.experiment"] == "kfac_vs_sgd"].iloc[0]
    write_report(recorded.experiment, tmp_path / "r", recorded.uri, parent["run_id"])
    children = runs[runs.get("tags.mlflow.parentRunId") == parent["run_id"]]
    assert len(children) == 8
    exp = parent["experiment_id"]
    ARTIFACTS.mkdir(exist_ok=True)
    with Browser(tmp_path / "profile") as page:
        page.get(f"{mlflow_server}/#/experiments/{exp}/runs")
        page.wait_for(f"return document.body.innerText.includes({parent['run_name']!r})")
        assert page.script(_EXPAND, parent["run_name"]), "no expander on the parent run's row"
        # Nested: the trials appear only once their parent is expanded.
        page.wait_for("return document.body.innerText.includes('mlp-digits-kfac-bs256')")
        text = page.script("return document.body.innerText")
        assert "mlp-digits-sgd-bs64" in text and "mlp-digits-kfac-bs1024" in text
        shot = ARTIFACTS / "mlflow-ui-nested-runs.png"
        page.screenshot(shot)
        assert shot.stat().st_size > 20_000

        page.get(
            f"{mlflow_server}/#/experiments/{exp}/runs/{parent['run_id']}"
            "/artifacts/report/index.html"
        )
        page.wait_for("return document.body.innerText.includes('scaling.png')")
        text = page.script("return document.body.innerText")
        assert "index.html" in text and "pareto.png" in text and "report/index.html" in text
        shot = ARTIFACTS / "mlflow-ui-report-artifact.png"
        page.screenshot(shot)
        assert shot.stat().st_size > 20_000
