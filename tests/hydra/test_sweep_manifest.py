"""The sweep manifest: a header plus one appended line per job, read back whole by ``orch sweep``
(a line torn by a crash skipped, manifests of the earlier inline layout still read)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from click.testing import CliRunner
from sweep_test_helpers import run

from orchestrator.cli import main
from orchestrator.cli.sweep import read_manifest


def write_header(folder: Path, sweep_id: str, **extra: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    header = {
        "sweep_id": sweep_id,
        "mode": "embedded",
        "url": "embedded:x",
        "state_dir": str(folder.parent),
        "sweep_dir": "/somewhere",
        "created": 1.0,
        **extra,
    }
    (folder / f"{sweep_id}.json").write_text(json.dumps(header))


def job(i: int) -> dict[str, object]:
    return {"job_id": 10 + i, "idx": i, "overrides": [f"+x={i}"], "folder": f"/f/job-{i}"}


def test_job_lines_are_read_and_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "sweeps"
    write_header(folder, "abc", jobs_file="abc.jobs.jsonl")
    lines = "".join(json.dumps(job(i)) + "\n" for i in range(3))
    (folder / "abc.jobs.jsonl").write_text(lines + '{"job_id": 13, "idx"')
    assert read_manifest("abc", tmp_path)["jobs"] == [job(0), job(1), job(2)]


def test_a_header_without_job_lines_yet_has_no_jobs(tmp_path: Path) -> None:
    write_header(tmp_path / "sweeps", "abc", jobs_file="abc.jobs.jsonl")
    assert read_manifest("abc", tmp_path)["jobs"] == []


def test_an_inline_manifest_of_the_earlier_layout_is_read(tmp_path: Path) -> None:
    write_header(tmp_path / "sweeps", "old", jobs=[job(0)])
    assert read_manifest("old", tmp_path)["jobs"] == [job(0)]


def test_sweep_list_counts_the_job_lines(tmp_path: Path) -> None:
    folder = tmp_path / "sweeps"
    write_header(folder, "abc", jobs_file="abc.jobs.jsonl")
    (folder / "abc.jobs.jsonl").write_text("".join(json.dumps(job(i)) + "\n" for i in range(4)))
    result = CliRunner().invoke(main, ["sweep", "list", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "abc" in line)
    assert "4" in row.split("│")[3], result.output


def test_a_multirun_appends_one_line_per_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    app = Path(__file__).resolve().parents[2] / "benchmarks" / "sweep_app.py"
    argv = [sys.executable, str(app), "-m", "+x=range(0,5)", "hydra/launcher=orch"]
    run([*argv, f"hydra.sweep.dir={sweep}"], tmp_path)
    folder = sweep / ".orch_launcher" / "orch" / "sweeps"
    (header_path,) = folder.glob("*.json")
    header = json.loads(header_path.read_text())
    assert "jobs" not in header
    lines = (folder / header["jobs_file"]).read_text().splitlines()
    assert sorted(json.loads(line)["idx"] for line in lines) == [0, 1, 2, 3, 4]
    assert len(read_manifest(header["sweep_id"], sweep / ".orch_launcher" / "orch")["jobs"]) == 5
