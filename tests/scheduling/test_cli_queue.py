"""``orch queue``'s table (issue 17): plain text as squeue prints it, columns aligned, a waiting
job's reason where a running job's nodes are, through the command as a user runs it."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator.cli import jobs, main


def _job(job_id: str, name: str, state: str, **fields: Any) -> dict[str, Any]:
    return {
        "display_id": job_id,
        "name": name,
        "user": "ada",
        "state": state,
        "start_time": None,
        "end_time": None,
        "nodes": 1,
        "shape": None,
        "nodelist": "",
        "reason": "",
        **fields,
    }


class FakeClient:
    def __init__(self) -> None:
        self.filters: dict[str, Any] = {}

    def jobs(self, **filters: Any) -> list[dict[str, Any]]:
        self.filters = filters
        return [
            _job(
                "12", "train", "RUNNING", start_time=time.time() - 3725, nodes=2, nodelist="n1,n2"
            ),
            _job(
                "13_4", "a-name-much-longer-than-the-column-allows", "PENDING", reason="Resources"
            ),
            _job("140", "boxed", "PENDING", nodes=None, shape="2x2x2:torus", reason="Priority"),
            _job("9", "done", "COMPLETED", start_time=1000.0, end_time=1065.0, nodelist="n3"),
        ]


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    fake = FakeClient()
    monkeypatch.setattr(jobs, "_client", lambda state_dir, changes=False: fake)
    return fake


def test_queue_prints_an_aligned_plain_table(client: FakeClient, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["queue", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 5
    assert lines[0].split() == list(jobs.QUEUE_COLUMNS)
    running = lines[1].split()
    assert running[:4] == ["12", "train", "ada", "RUNNING"] and running[5:] == ["2", "n1,n2"]
    assert re.fullmatch(r"1:02:0\d", running[4])  # an hour and two minutes, as squeue's TIME
    assert lines[4].split() == ["9", "done", "ada", "COMPLETED", "1:05", "1", "n3"]
    # The name cut at 24 characters, the reason in parentheses, a shape for a boxed job.
    assert lines[2].split() == [
        "13_4",
        "a-name-much-longer-than-",
        "ada",
        "PENDING",
        "0:00",
        "1",
        "(Resources)",
    ]
    assert lines[3].split()[-2:] == ["2x2x2:torus", "(Priority)"]
    # Aligned: every column starts (text) or ends (numbers) at the same place on each line.
    for column in ("NAME", "USER", "STATE", "NODELIST(REASON)"):
        start = lines[0].index(column)
        assert all(line[start - 2 : start] == "  " and line[start] != " " for line in lines)
    for column in ("JOBID", "TIME", "NODES"):
        end = lines[0].index(column) + len(column)
        assert all(line[end - 1] != " " and line[end : end + 2] == "  " for line in lines)
    assert not any(line.endswith(" ") for line in lines)
    # Waiting and running jobs unless told otherwise, as squeue.
    assert client.filters["state"] == jobs.UNFINISHED


def test_an_empty_queue_prints_the_header_alone(
    client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "jobs", lambda **filters: [])
    result = CliRunner().invoke(main, ["queue"])
    assert result.exit_code == 0, result.output
    assert result.output == "  ".join(jobs.QUEUE_COLUMNS) + "\n"


def test_a_name_that_looks_like_markup_is_printed_as_given(
    client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rich read "[bold]" in a name as a style and dropped it from the table.
    monkeypatch.setattr(client, "jobs", lambda **filters: [_job("5", "[bold]x", "HELD")])
    result = CliRunner().invoke(main, ["queue", "-a"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split()[:2] == ["5", "[bold]x"]
