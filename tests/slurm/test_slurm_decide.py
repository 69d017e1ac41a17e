"""Pure parts of the Slurm backend: the state table and the poll decision on captured text,
the task wrapper's rank variables, and the generated scripts (golden files)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from launchers.slurm import SlurmBackend
from launchers.slurm.pilot import render_pilot_script
from launchers.slurm.poll import decide
from launchers.slurm.supervisor import rank_variables
from launchers.slurm.text import (
    SLURM_STATES,
    UNKNOWN_STATE,
    Phase,
    SbatchScript,
    SlurmParseError,
    parse_node_events,
    parse_sacct,
    parse_sinfo_nodes,
    parse_squeue,
    parse_time_left,
    render_sbatch_script,
    slurm_state,
)
from orchestrator.backends.contract import Liveness
from orchestrator.nodeside.record import TaskEnd, parse_task_end
from orchestrator.resources.cluster import load_cluster
from orchestrator.scheduling.job import JobState

CAPTURED = Path(__file__).parent / "captured"
L = Liveness
S = JobState


def test_every_slurm_state_has_a_phase() -> None:
    # The long names of Slurm 22.05's job states (slurm.h, job_state_string).
    names = {
        "PENDING", "RUNNING", "SUSPENDED", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT",
        "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "CONFIGURING",
        "COMPLETING", "REQUEUED", "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
        "SPECIAL_EXIT", "SIGNALING", "STAGE_OUT", "STOPPED", "REVOKED",
    }  # fmt: skip
    assert names <= set(SLURM_STATES)
    with pytest.raises(SlurmParseError):
        slurm_state("EXPLODED")


def test_the_state_table_agrees_with_itself() -> None:
    # One table: a state's phase and our state for it tell the same story.
    ended = {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT}
    for name, row in SLURM_STATES.items():
        assert (row.phase is Phase.ENDED) == (row.ours in ended), name
        assert (row.phase is Phase.REQUEUE) == (row.ours in {S.NODE_FAIL, S.PREEMPTED}), name
        assert row.phase.is_active == (not row.ours.is_finished and row.ours is not S.PREEMPTED)


def test_a_state_newer_than_the_table_keeps_the_job_active() -> None:
    # A newer Slurm's state must not stall every poll (it did raise SlurmParseError).
    (row,) = parse_squeue("42|HIBERNATING|n1\n")
    assert row.slurm_state is UNKNOWN_STATE and row.phase.is_active
    assert decide(row.phase, [None]).liveness is L.RUNNING


@pytest.mark.parametrize(
    ("state", "phase"),
    [
        ("PENDING", Phase.WAITING),
        ("CONFIGURING", Phase.WAITING),
        ("RUNNING", Phase.RUNNING),
        ("COMPLETING", Phase.ENDING),
        ("SUSPENDED", Phase.ENDING),
        ("COMPLETED", Phase.ENDED),
        ("FAILED", Phase.ENDED),
        ("CANCELLED by 0", Phase.ENDED),
        ("TIMEOUT", Phase.ENDED),
        ("OUT_OF_MEMORY", Phase.ENDED),
        ("NODE_FAIL", Phase.REQUEUE),
        ("PREEMPTED", Phase.REQUEUE),
        ("BOOT_FAIL", Phase.REQUEUE),
    ],
)
def test_state_table(state: str, phase: Phase) -> None:
    assert slurm_state(state).phase is phase


def test_captured_squeue_and_sacct_map_to_the_daemon_view() -> None:
    ended = {r.job_id: r for r in parse_squeue((CAPTURED / "squeue_ended.txt").read_text())}
    phases = {r.raw_state: r.phase for r in ended.values()}
    assert phases == {
        "CANCELLED": Phase.ENDED,
        "COMPLETED": Phase.ENDED,
        "FAILED": Phase.ENDED,
        "NODE_FAIL": Phase.REQUEUE,
    }
    node_fail = next(r for r in ended.values() if r.raw_state == "NODE_FAIL")
    assert node_fail.nodes == ("n1", "n2", "n3")
    live = parse_squeue((CAPTURED / "squeue_live.txt").read_text())
    assert all(r.phase.is_active for r in live)
    fields = ("JobID", "State", "ExitCode", "NodeList")
    rows = {r.raw_state: r for r in parse_sacct((CAPTURED / "sacct_ended.txt").read_text(), fields)}
    failed = rows["FAILED"]
    assert (failed.exit_code, failed.signal) == (7, 0)
    # No task status written (e.g. killed before the wrapper ran): sacct's code fills in.
    result = decide(failed.phase, [None, None], slurm_exit=(7, 0))
    assert result.liveness is L.EXITED and result.exit_codes == (7, 7)
    assert decide(slurm_state("CANCELLED by 0").phase, [None], slurm_exit=(0, 0)).liveness is L.LOST
    assert decide(slurm_state("NODE_FAIL").phase, [None, None, None]).liveness is L.REQUEUE


@pytest.mark.parametrize(
    ("phase", "tasks", "kwargs", "liveness", "codes"),
    [
        (Phase.RUNNING, [None, None], {}, L.RUNNING, (None, None)),
        (Phase.RUNNING, [TaskEnd(7), None], {}, L.RUNNING, (7, None)),  # daemon stops the rest
        (Phase.ENDED, [TaskEnd(0), TaskEnd(0)], {}, L.EXITED, (0, 0)),
        (Phase.ENDED, [TaskEnd(0), TaskEnd(7)], {}, L.EXITED, (0, 7)),
        (Phase.ENDED, [TaskEnd(143, "SIGTERM")], {}, L.EXITED, (143,)),
        # Checkpointed on the engine's signal: run again.
        (Phase.ENDED, [TaskEnd(3, "SIGUSR1"), TaskEnd(3, "SIGUSR1")], {}, L.REQUEUE, (3, 3)),
        (Phase.ENDED, [TaskEnd(0), TaskEnd(3, "SIGTERM")], {}, L.REQUEUE, (0, 3)),
        # Exit 3 with no signal is the program's own failure; so is any other code beside it.
        (Phase.ENDED, [TaskEnd(3)], {}, L.EXITED, (3,)),
        (Phase.ENDED, [TaskEnd(7), TaskEnd(3, "SIGTERM")], {}, L.EXITED, (7, 3)),
        (Phase.ENDED, [TaskEnd(3, "SIGUSR1")], {"requeue_code": None}, L.EXITED, (3,)),
        (Phase.REQUEUE, [TaskEnd(143, "SIGTERM"), None], {}, L.REQUEUE, (143, None)),
        (None, [None], {}, L.LOST, (None,)),
        (Phase.ENDED, [None], {"slurm_exit": (0, 9)}, L.EXITED, (137,)),
        (Phase.ENDED, [None], {"slurm_exit": (0, 0), "slurm_completed": True}, L.EXITED, (0,)),
        # Pilot: the allocation ended under the job.
        (Phase.ENDED, [TaskEnd(143, "SIGTERM")], {"allocation_ended": True}, L.REQUEUE, (143,)),
        (Phase.ENDED, [None], {"allocation_ended": True}, L.REQUEUE, (None,)),
        (Phase.ENDED, [TaskEnd(0)], {"allocation_ended": True}, L.EXITED, (0,)),
    ],
)
def test_decide(
    phase: Phase | None,
    tasks: list[TaskEnd | None],
    kwargs: dict[str, object],
    liveness: Liveness,
    codes: tuple[int | None, ...],
) -> None:
    result = decide(phase, tasks, **kwargs)  # type: ignore[arg-type]
    assert (result.liveness, result.exit_codes) == (liveness, codes)


def test_parse_task_end() -> None:
    assert parse_task_end("0 -\n") == TaskEnd(0)
    assert parse_task_end("3 SIGUSR1\n") == TaskEnd(3, "SIGUSR1")
    assert parse_task_end("") is None and parse_task_end("x y") is None


def test_parse_sinfo_and_events_captured() -> None:
    states = parse_sinfo_nodes((CAPTURED / "sinfo_mixed.txt").read_text())
    busy = {n for n, s in states.items() if s != "idle"}
    assert busy == {"n5", "n6", "n7", "n9", "n10"}
    events = parse_node_events((CAPTURED / "sacctmgr_events.txt").read_text())
    assert events and all(e == ("n3", "DOWN") for e in events)


def test_wrapper_rank_variables_follow_our_node_order() -> None:
    # Our allocator's order n9,n2 (Slurm numbers n2 first): node rank follows ours.
    env = {
        "ORCH_NODES": "n9,n2",
        "ORCH_TASKS_PER_NODE": "2",
        "SLURMD_NODENAME": "n2",
        "SLURM_NODEID": "0",
        "SLURM_LOCALID": "1",
    }
    assert rank_variables(env) == {
        "RANK": "3",
        "LOCAL_RANK": "1",
        "GROUP_RANK": "1",
        "ORCH_TASK_RANK": "3",
        "ORCH_NODE_RANK": "1",
        "ORCH_NODENAME": "n2",
    }


def test_direct_and_pilot_scripts_golden(check_golden: Callable[[str, str], None]) -> None:
    script = SbatchScript(
        name="kfac; rm -rf /",
        argv=["python", "-I", "-S", "/opt/_slurm_task.py", "/srv/jobs/1/attempt-1", "--", "echo",
              "it's $HOME"],
        nodelist=["n1", "n2", "n3"],
        tasks_per_node=2,
        time_s=660,
        stdout="/srv/jobs/1/stdout",
        stderr="/srv/jobs/1/stderr",
        env={"ORCH_NODES": "n1,n2,n3", "TAG": "a b"},
        extra={"--open-mode": "append", "--comment": "orch-0:1:1"},
        flags=("--exclusive", "--no-requeue"),
        srun_options=("--kill-on-bad-exit=0", "--label", "--cpus-per-task=1"),
    )  # fmt: skip
    check_golden("direct_job.sh", render_sbatch_script(script))
    pilot = render_pilot_script(
        name="orch-0-pilot",
        nodes=8,
        time_s=7200,
        output="/srv/my state/pilot-%j.out",
        comment="orch-0",
        partition="debug",
    )
    check_golden("pilot_job.sh", pilot)


def test_bad_root_and_mode_are_refused(tmp_path: Path) -> None:
    names = load_cluster("slurm16").topology.node_names
    with pytest.raises(Exception, match="%"):
        SlurmBackend(tmp_path / "a%j", names)
    with pytest.raises(Exception, match="direct or pilot"):
        SlurmBackend(tmp_path, names, mode="both")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0:59", 59.0), ("59:58", 3598.0), ("1:00:00", 3600.0), ("2-00:00:01", 172801.0),
     ("UNLIMITED", None), ("INVALID", None)],
)  # fmt: skip
def test_parse_time_left(text: str, seconds: float | None) -> None:
    assert parse_time_left(text) == seconds


def test_parse_time_left_refuses_junk() -> None:
    with pytest.raises(SlurmParseError, match="time left"):
        parse_time_left("soon")
