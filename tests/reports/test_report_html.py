"""`orch report` on a recorded experiment: the tables, the figures, the HTML, and the artifact
on the sweep's parent run; and the pure tables on hand-made frames."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from orchestrator.cli import main
from orchestrator.reports import (
    diverged_runs,
    generalisation_table,
    load_runs,
    pareto_front,
    scaling_table,
    sweep_parents,
    trials,
    verdict_sentence,
    verdict_table,
    write_report,
)
from orchestrator.tracking import connect
from tests.reports.record_experiment import Recorded


def test_report_has_every_section_and_is_logged_on_the_parent(
    recorded: Recorded, tmp_path: Path
) -> None:
    runs = load_runs(recorded.experiment, recorded.uri)
    parents = sweep_parents(runs)
    assert len(parents) == 2  # kfac_vs_sgd and nas
    kfac_vs_sgd = parents[parents["tags.orch.experiment"] == "kfac_vs_sgd"]["run_id"].iloc[0]
    report = write_report(recorded.experiment, tmp_path / "r", recorded.uri, kfac_vs_sgd)

    scaling = report.tables["scaling"]
    for opt in ("sgd", "kfac"):
        mine = scaling[(scaling["optimizer"] == opt) & (scaling["batch_size"] == 256)]
        assert sorted(mine["nodes"]) == [1, 2]
        one = mine[mine["nodes"] == 1].iloc[0]
        two = mine[mine["nodes"] == 2].iloc[0]
        assert one["efficiency"] == pytest.approx(1.0)
        assert two["efficiency"] == pytest.approx(two["samples_per_s"] / (2 * one["samples_per_s"]))
    batch = report.tables["batch"]
    assert set(batch["batch_size"]) == {64, 256, 1024}
    assert set(batch["optimizer"]) == {"sgd", "kfac"}
    # Every run that reached the 95 % target counted its steps; at least the small batches did.
    assert batch[batch["batch_size"] == 64]["steps_to_target"].notna().all()
    gen = report.tables["generalisation"]
    assert (gen["gap"] == gen["train_accuracy"] - gen["val_accuracy"]).all()
    front = report.tables["pareto"]
    assert len(front) == 4 and front["pareto"].any()  # the four NAS trials, only them
    assert len(report.tables["best"]) > 0

    verdict = report.tables["verdict"]
    assert set(verdict["batch_size"]) == {64, 256, 1024}
    text = report.index.read_text()
    # The verdict first: the sentence a reader would write, before any figure.
    assert text.index("<h2>Verdict</h2>") < text.index("1. Scaling")
    assert "reached the target first at batch" in text or "no run reached" in text.lower()
    for heading in ("1. Scaling", "2. Steps and time", "3. Generalisation", "4. NAS Pareto"):
        assert heading in text
    assert "5. Best configurations" in text
    for png in report.figures:
        assert png.stat().st_size > 10_000
        assert f'data-file="{png.name}"' in text

    assert report.logged_to == kfac_vs_sgd
    listed = {a.path for a in connect(recorded.uri).list_artifacts(kfac_vs_sgd, "report")}
    assert "report/index.html" in listed and "report/scaling.png" in listed


def test_orch_report_cli_defaults_to_the_newest_sweep(recorded: Recorded, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        main,
        [
            "report",
            "--experiment",
            recorded.experiment,
            "--out",
            str(out),
            "--tracking-uri",
            recorded.uri,
        ],
    )
    assert result.exit_code == 0, result.output
    newest = sweep_parents(load_runs(recorded.experiment, recorded.uri))["run_id"].iloc[0]
    assert f"logged as artifacts report/ of run {newest}" in result.output
    assert (out / "index.html").exists()


def test_orch_report_refuses_an_unknown_experiment(recorded: Recorded, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["report", "--experiment", "nope", "--out", str(tmp_path), "--tracking-uri", recorded.uri],
    )
    assert result.exit_code != 0
    assert "no experiment 'nope'" in result.output and recorded.experiment in result.output


def _frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    base = {"status": "FINISHED", "start_time": pd.Timestamp(0), "tags.world_size": "1"}
    return pd.DataFrame(
        [{**base, "run_id": f"r{i}", "run_name": f"r{i}", **r} for i, r in enumerate(rows)]
    )


def test_efficiency_is_throughput_over_n_times_one_node() -> None:
    rows = [
        {
            "params.batch_size": "512",
            "params.optimizer.name": "sgd",
            "params.model.name": "mlp",
            "tags.world_size": str(n),
            "metrics.samples_per_sec": s,
        }
        for n, s in ((1, 1000.0), (2, 1500.0), (4, 2000.0))
    ]
    table = scaling_table(trials(_frame(rows)))
    assert list(table["efficiency"]) == pytest.approx([1.0, 0.75, 0.5])


def test_pareto_front_keeps_only_undominated_trials() -> None:
    cells = [(0.9, 1.0), (0.95, 2.0), (0.85, 1.5), (0.95, 3.0), (0.7, 0.5)]
    rows = [
        {
            "params.batch_size": "64",
            "params.optimizer.name": "sgd",
            "params.model.name": "param",
            "params.model.kind": "mlp",
            "params.model.depth": "1",
            "params.model.width": str(i),
            "metrics.val_accuracy": acc,
            "metrics.latency_ms": lat,
        }
        for i, (acc, lat) in enumerate(cells)
    ]
    front = pareto_front(trials(_frame(rows)))
    on = sorted(zip(front["val_accuracy"], front["latency_ms"], front["pareto"], strict=True))
    assert [(a, b) for a, b, p in on if p] == [(0.7, 0.5), (0.9, 1.0), (0.95, 2.0)]
    assert not math.isnan(front["latency_ms"].sum())


def test_report_without_a_sweep_is_written_not_logged(tmp_path: Path) -> None:
    # Two runs logged by hand (no sweep parent, no NAS trials): the sections without runs say
    # so, and there is no run to attach the report to.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = connect(uri)
    exp = client.create_experiment("hand", artifact_location=(tmp_path / "art").as_uri())
    for opt, sps in (("sgd", 1000.0), ("kfac", 500.0)):
        run = client.create_run(exp, run_name=f"{opt}-run", tags={"world_size": "1"})
        rid = run.info.run_id
        client.log_param(rid, "batch_size", "64")
        client.log_param(rid, "optimizer.name", opt)
        client.log_param(rid, "model.name", "mlp")
        client.log_metric(rid, "samples_per_sec", sps)
        client.log_metric(rid, "val_accuracy", 0.9)
        client.log_metric(rid, "train_accuracy", 0.95)
        client.set_terminated(rid, "FINISHED")
    report = write_report("hand", tmp_path / "out", uri)
    assert report.logged_to is None
    assert report.tables["pareto"].empty and report.tables["batch"]["reached"].sum() == 0
    assert len(report.tables["scaling"]) == 2
    assert report.tables["generalisation"]["gap"].round(6).tolist() == [0.05, 0.05]
    assert "no runs for this table" in report.index.read_text()


def test_the_verdict_says_who_reached_the_target_first_and_by_how_much() -> None:
    # Issue 17: the report had no headline; a reader had to compare two figures by eye.
    nan = math.nan
    rows = [
        ("sgd", 128, 400, 20.0), ("kfac", 128, 100, 10.0),
        ("sgd", 1024, nan, nan), ("kfac", 1024, 50, 30.0),
        ("sgd", 4096, nan, nan), ("kfac", 4096, nan, nan),
    ]  # fmt: skip
    batch = pd.DataFrame(
        [
            {"optimizer": o, "batch_size": b, "steps_to_target": st, "time_to_target_s": t}
            for o, b, st, t in rows
        ]
    )
    verdict = verdict_table(batch).set_index("batch_size")
    assert list(verdict["faster"]) == ["kfac", "kfac", ""]
    assert verdict.loc[128, "steps_ratio"] == 4.0 and verdict.loc[128, "time_ratio"] == 2.0
    assert math.isnan(verdict.loc[1024, "time_ratio"])  # only K-FAC got there
    sentence = verdict_sentence(verdict_table(batch))
    assert sentence == (
        "K-FAC reached the target first at batch 128, 1,024 (2x faster in median); "
        "at batch 4,096 no run reached it."
    )


def test_the_gap_uses_the_final_models_train_accuracy_and_leaves_diverged_runs_out() -> None:
    # Issue 17: the gap came out -0.13 (a running mean against a final accuracy), and runs that
    # diverged (validation accuracy 0.25 and 0.11) were plotted as a gap.
    def run(bs: int, val: float, running: float, final: float, why: str | None) -> dict[str, str]:
        row = {
            "params.batch_size": str(bs),
            "params.optimizer.name": "sgd",
            "params.model.name": "mlp",
            "metrics.final_val_accuracy": val,
            "metrics.train_accuracy": running,
            "metrics.final_train_accuracy": final,
        }
        return row | ({"tags.diverged": why} if why else {})

    rows = [
        run(128, 0.90, 0.80, 0.95, None),
        run(512, 0.25, 0.30, 0.20, "final training loss 7.1 above ln(10) = 2.3"),
        run(1024, 0.11, 0.10, 0.10, "validation accuracy 0.11 within 20 % of chance (1/10)"),
    ]
    t = trials(_frame(rows))
    gen = generalisation_table(t)
    assert list(gen["batch_size"]) == [128]
    assert gen.iloc[0]["gap"] == pytest.approx(0.95 - 0.90)  # not 0.80 - 0.90
    assert list(diverged_runs(t)["batch_size"]) == [512, 1024]
