"""Slurm text formats: the generated batch script (golden file) and parsers on captured output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from launchers.slurm.text import (
    SbatchScript,
    SlurmParseError,
    format_time_limit,
    parse_sacct,
    parse_sbatch,
    parse_squeue,
    render_sbatch_script,
    slurm_state,
)
from orchestrator.exceptions import InvalidRequestError
from orchestrator.scheduling.job import JobState

CAPTURED = Path(__file__).parent / "captured"


def test_sbatch_script_golden(check_golden: Callable[[str, str], None]) -> None:
    spec = SbatchScript(
        name="kfac vs sgd; rm -rf /",
        argv=["python", "-m", "sweeps.train", "optimizer=kfac", "note=it's $HOME"],
        nodelist=["n1", "n2", "n3", "n7"],
        tasks_per_node=2,
        cpus_per_task=2,
        time_s=3601,
        stdout="/tmp/out dir/%j.out",
        env={"OMP_NUM_THREADS": "1", "TAG": "a b;c"},
        extra={"--partition": "debug"},
    )
    check_golden("sbatch_script.sh", render_sbatch_script(spec))


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (SbatchScript(name="x", argv=[], nodelist=["n1"]), "argv"),
        (SbatchScript(name="x", argv=["true"], nodelist=[]), "nodelist"),
        (SbatchScript(name="a\nb", argv=["true"], nodelist=["n1"]), "job-name"),
        (SbatchScript(name="x", argv=["true"], nodelist=["n1"], env={"1X": "v"}), "env"),
        (SbatchScript(name="x", argv=["true"], nodelist=["n1"], extra={"-p": "d"}), "extra"),
    ],
)
def test_sbatch_script_rejects(spec: SbatchScript, field: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        render_sbatch_script(spec)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("seconds", "text"), [(1, "0-00:01:00"), (3600, "0-01:00:00"), (90000, "1-01:00:00")]
)
def test_time_limit(seconds: float, text: str) -> None:
    assert format_time_limit(seconds) == text


def test_parse_sbatch() -> None:
    assert parse_sbatch("Submitted batch job 3\n") == "3"
    assert parse_sbatch("2\n") == "2"
    assert parse_sbatch("17;cluster\n") == "17"
    with pytest.raises(SlurmParseError, match="no job id"):
        parse_sbatch("sbatch: error: Batch job submission failed: Invalid node name specified\n")


def test_parse_sacct_captured() -> None:
    records = parse_sacct((CAPTURED / "sacct_steps.txt").read_text())
    by_id = {r.job_id: r for r in records}
    assert set(by_id) == {"1", "2", "3", "4", "5", "6"}  # steps (1.batch, ...) skipped
    assert by_id["1"].state is JobState.COMPLETED and by_id["1"].nodes == ("n1", "n2")
    assert by_id["2"].state is JobState.FAILED and by_id["2"].exit_code == 3
    assert by_id["3"].state is JobState.CANCELLED and by_id["3"].raw_state == "CANCELLED by 0"
    assert by_id["5"].state is JobState.RUNNING and by_id["5"].nodes == ("n4", "n5", "n6")
    timeout = parse_sacct((CAPTURED / "sacct_timeout.txt").read_text())
    assert [(r.job_id, r.state) for r in timeout] == [("4", JobState.TIMEOUT)]


def test_parse_squeue_captured() -> None:
    running = parse_squeue((CAPTURED / "squeue_running.txt").read_text())
    assert [(r.job_id, r.state, len(r.nodes)) for r in running] == [
        ("4", JobState.RUNNING, 1),
        ("5", JobState.RUNNING, 3),
        ("6", JobState.RUNNING, 16),
    ]
    pending = parse_squeue((CAPTURED / "squeue_pending.txt").read_text())
    assert pending[0].state is JobState.PENDING and pending[0].nodes == ()


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("PENDING", JobState.PENDING),
        ("RUNNING+", JobState.RUNNING),
        ("CANCELLED by 1000", JobState.CANCELLED),
        ("NODE_FAIL", JobState.NODE_FAIL),
        ("PREEMPTED", JobState.PREEMPTED),
        ("OUT_OF_MEMORY", JobState.FAILED),
        ("REQUEUED", JobState.PENDING),
    ],
)
def test_state_table(text: str, state: JobState) -> None:
    assert slurm_state(text).ours is state


def test_bad_rows_are_errors() -> None:
    with pytest.raises(SlurmParseError, match="unknown Slurm job state"):
        slurm_state("EXPLODED")
    with pytest.raises(SlurmParseError, match="expected 6"):
        parse_sacct("1|COMPLETED|0:0\n")
    with pytest.raises(SlurmParseError, match="expected 3"):
        parse_squeue("1 RUNNING n1\n")
