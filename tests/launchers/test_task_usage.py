"""Issue 17, accounting: the task record carries the task's CPU time and peak memory, which
each backend's node-side supervisor takes from the kernel (``wait4``'s rusage of the task)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.backends.contract import TaskUsage, usage_of
from orchestrator.nodeside.record import TaskEnd, parse_task_end, read_task_end, write_task_end

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
MIB = 1 << 20
BURN = (
    "import time\n"
    f"block = b'x' * (40 * {MIB})\n"
    "t = time.process_time()\n"
    "while time.process_time() - t < 0.2:\n"
    "    pass\n"
)


@pytest.mark.parametrize(
    ("text", "end"),
    [
        ("0\n", TaskEnd(0)),  # the first form: the code alone
        ("0 -\n", TaskEnd(0)),
        ("143 SIGTERM\n", TaskEnd(143, "SIGTERM")),
        ("3 engine\n", TaskEnd(3, "engine")),  # whatever names the signal is kept as given
        ("0 - 1.250000 51200\n", TaskEnd(0, None, 1.25, 51200)),
        ("143 SIGTERM 0.5 2048\n", TaskEnd(143, "SIGTERM", 0.5, 2048)),
        ("1 - - 2048\n", TaskEnd(1, None, None, 2048)),
        ("1 - 0.5 -\n", TaskEnd(1, None, 0.5, None)),
        ("1 - junk 12x\n", TaskEnd(1)),  # unreadable usage: the status still counts
    ],
)
def test_the_record_reads_every_form(text: str, end: TaskEnd) -> None:
    assert parse_task_end(text) == end


@pytest.mark.parametrize(
    "end",
    [
        TaskEnd(0),
        TaskEnd(143, "SIGTERM"),
        TaskEnd(0, None, 1.25, 51200),
        TaskEnd(3, "SIGUSR1", 0.001, 0),
        TaskEnd(1, None, None, 2048),
    ],
)
def test_the_record_round_trips(tmp_path: Path, end: TaskEnd) -> None:
    write_task_end(tmp_path, 4, end)
    assert read_task_end(tmp_path, 4) == end


def test_a_record_without_usage_is_the_old_format(tmp_path: Path) -> None:
    # Daemons of before issue 17 read only the first two words: they still can.
    write_task_end(tmp_path, 0, TaskEnd(7, "SIGUSR1"))
    assert (tmp_path / "task-0.rc").read_text() == "7 SIGUSR1\n"
    write_task_end(tmp_path, 1, TaskEnd(0, None, 2.5, 1024))
    assert (tmp_path / "task-1.rc").read_text().split()[:2] == ["0", "-"]


def test_poll_usage_from_task_records() -> None:
    ends = [TaskEnd(0, None, 1.5, 2048), None, TaskEnd(1)]
    assert usage_of(ends) == (TaskUsage(1.5, 2048), None, None)
    assert usage_of([None, TaskEnd(0)]) == ()  # nothing known: nothing said


def _check_usage(end: TaskEnd | None) -> None:
    assert end is not None and end.code == 0
    assert end.cpu_s is not None and end.cpu_s >= 0.15, end
    assert end.maxrss_kib is not None and end.maxrss_kib >= 40 * 1024, end


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_local_supervisor_records_usage_of_a_command(tmp_path: Path) -> None:
    script = REPO / "launchers" / "local" / "supervisor.py"
    _run([PY, "-I", "-S", str(script), str(tmp_path), "0", "--", PY, "-c", BURN])
    _check_usage(read_task_end(tmp_path, 0))


def test_local_supervisor_records_usage_of_an_inline_script(tmp_path: Path) -> None:
    # sys.executable -I -S script.py: run in a forked copy of the supervisor.
    task = tmp_path / "burn.py"
    task.write_text(BURN)
    script = REPO / "launchers" / "local" / "supervisor.py"
    _run([PY, "-I", "-S", str(script), str(tmp_path), "0", "--", PY, "-I", "-S", str(task)])
    _check_usage(read_task_end(tmp_path, 0))


def test_local_supervisor_records_no_usage_of_a_command_that_cannot_start(tmp_path: Path) -> None:
    script = REPO / "launchers" / "local" / "supervisor.py"
    done = subprocess.run(
        [PY, "-I", "-S", str(script), str(tmp_path), "0", "--", "/nonexistent/x"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 127
    assert read_task_end(tmp_path, 0) == TaskEnd(127)


def test_slurm_supervisor_records_usage(tmp_path: Path) -> None:
    script = REPO / "launchers" / "slurm" / "supervisor.py"
    env = {"PATH": os.defpath, "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    _run([PY, "-I", "-S", str(script), str(tmp_path), "--", PY, "-c", BURN], env)
    _check_usage(read_task_end(tmp_path, 0))


def test_pjm_supervisor_records_usage(tmp_path: Path) -> None:
    job = {
        "dir": str(tmp_path),
        "tasks_per_node": 1,
        "nodes": ["n0"],
        "env": {},
        "argv": [PY, "-c", BURN],
        "cwd": str(tmp_path),
        "stdout": str(tmp_path / "out"),
        "stderr": str(tmp_path / "err"),
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    script = REPO / "launchers" / "pjm" / "supervisor.py"
    env = {"PATH": os.defpath, "OMPI_COMM_WORLD_RANK": "0"}
    _run([PY, "-I", "-S", str(script), str(tmp_path / "job.json")], env)
    _check_usage(read_task_end(tmp_path, 0))


def test_ray_actor_records_usage(tmp_path: Path) -> None:
    from launchers.ray.actor import TaskActor

    actor = TaskActor(str(tmp_path), str(tmp_path / "out"), str(tmp_path / "err"), 0, False)
    actor.devices = lambda: {"ORCH_GPUS": "", "CUDA_VISIBLE_DEVICES": ""}  # type: ignore[method-assign]
    assert actor.start([PY, "-c", BURN], {"PATH": os.defpath}, str(tmp_path)) > 0
    deadline = time.monotonic() + 60
    while actor.status() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert actor.status() == 0
    _check_usage(read_task_end(tmp_path, 0))
