"""The ``orch`` command line: simulate (table, JSON, protocol), clusters, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from orchestrator.cli import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_simulate_json_has_the_documented_keys(tmp_path: Path) -> None:
    out = tmp_path / "jobs.csv"
    plot = tmp_path / "fig.png"
    code, stdout, _ = run(
        "simulate", "--window", "0:500", "--order", "sjf", "--backfill", "easy",
        "--format", "json", "--out", str(out), "--plot", str(plot),
    )  # fmt: skip
    assert code == 0, stdout
    summary = json.loads(stdout)
    for key in ("jobs", "mean_wait_s", "p95_wait_s", "mean_bsld", "utilization", "makespan_s",
                "wall_s"):  # fmt: skip
        assert key in summary
    assert summary["jobs"] == 500
    assert summary["nodes"] == 256  # from the shipped trace's MaxNodes header
    records = pd.read_csv(out)
    assert len(records) == 500 and (records["start"] >= records["submit"]).all()
    assert plot.stat().st_size > 10_000


def test_simulate_table_and_parquet(tmp_path: Path) -> None:
    out = tmp_path / "jobs.parquet"
    code, stdout, _ = run(
        "simulate", "--window", "100:200", "--nodes", "300", "--out", str(out),
        "--backfill", "conservative", "--estimate", "actual",
    )  # fmt: skip
    assert code == 0
    assert "mean_bsld" in stdout and "conservative" in stdout
    assert len(pd.read_parquet(out)) == 200


def test_protocol_json(shared_traces: Path) -> None:
    code, stdout, _ = run(
        "simulate", "--protocol", "rlscheduler", "--trace", str(shared_traces / "lublin_256.swf"),
        "--format", "json", "--backfills", "none,strict",
    )  # fmt: skip
    assert code == 0
    rows = json.loads(stdout)
    assert {(r["order"], r["backfill"]) for r in rows} >= {("fcfs", "none"), ("f1", "strict")}
    assert all({"order", "backfill", "mean_bsld", "utilization"} <= set(r) for r in rows)
    assert len(rows) == 10


def test_synthetic_torus_workload_from_the_cli() -> None:
    code, stdout, _ = run(
        "simulate", "--cluster", "fugaku", "--synthetic", "60", "--format", "json",
    )  # fmt: skip
    assert code == 0, stdout
    summary = json.loads(stdout)
    assert summary["jobs"] == 60 and summary["fragmentation"] is not None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--window", "5"], "--window"),
        (["--window", "99999:10"], "outside the trace"),
        (["--trace", "/nonexistent.swf"], "trace file not found"),
        (["--nodes", "4", "--cluster", "slurm16"], "not both"),
        (["--cluster", "nope"], "unknown cluster preset"),
        (["--order", "random"], "unknown ordering 'random'"),
        (["--protocol", "rlscheduler", "--orders", "sjf,lifo"], "unknown ordering 'lifo'"),
        (["--out", "x.txt"], ".csv or .parquet"),
        (["--synthetic", "5", "--cluster", "slurm16"], "needs a torus3d"),
        (["--protocol", "rlscheduler", "--backfills", "none,eager"], "'eager' is not one of"),
    ],
)
def test_bad_input_gives_a_clear_error(args: list[str], fragment: str) -> None:
    code, stdout, stderr = run("simulate", *args)
    assert code != 0
    assert fragment in stdout + stderr


def test_malformed_trace_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.swf"
    bad.write_text("; MaxProcs: 4\n1 0 -1 10 2 -1 -1 2 60 -1 1 1 1 -1 -1 -1 -1 -1\n2 0 x\n")
    code, stdout, stderr = run("simulate", "--trace", str(bad))
    assert code == 1
    assert f"{bad}:3" in stdout + stderr


def test_clusters_lists_presets() -> None:
    code, stdout, _ = run("clusters")
    assert code == 0
    for name in ("local", "slurm16", "fugaku", "fattree1024"):
        assert name in stdout


def test_console_script_is_installed() -> None:
    orch = Path(sys.executable).parent / "orch"
    done = subprocess.run(
        [str(orch), "simulate", "--window", "0:100", "--format", "json"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    assert json.loads(done.stdout)["jobs"] == 100
