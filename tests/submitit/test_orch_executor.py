"""``orchestrator.Executor`` directly: parameters, errors, logs, cancel, the end of the script;
and ``DaemonClient.from_state_dir`` given a str."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import submitit

import orchestrator
from orchestrator.daemon.client import DaemonClient
from orchestrator.daemon.state_folder import DaemonFiles
from orchestrator.exceptions import DaemonError
from orchestrator.nodeside.files import process_start_ticks
from orchestrator.submitit_plugin import OrchExecutor, OrchJobEnvironment


def fail(message: str) -> None:
    print("about to fail")
    raise ValueError(message)


def test_the_plugin_is_found_by_submitit() -> None:
    from submitit.core import plugins

    assert plugins.get_executors()["orch"] is OrchExecutor
    assert isinstance(plugins.get_job_environments()["orch"], OrchJobEnvironment)
    assert orchestrator.Executor is OrchExecutor


def test_parameters_map_to_our_fields() -> None:
    executor = orchestrator.Executor("log_test")
    executor.update_parameters(
        timeout_min=10,
        nodes=2,
        tasks_per_node=2,
        cpus_per_task=1,
        gpus_per_node=0,
        mem_gb=1.5,
        name="train",
        orch_priority=5,
        orch_partition="cpu",
    )
    job = executor.job_mapping()
    expected = {"nodes": 2, "tasks_per_node": 2, "cpus_per_task": 1, "gpus_per_node": 0}
    assert {k: job[k] for k in expected} == expected
    assert (job["mem"], job["time"], job["name"], job["priority"]) == ("1536M", 600.0, "train", 5)
    assert job["partition"] == "cpu"
    assert job["env"]["ORCH_SIGNAL"] == "USR2@90"  # Slurm's submitit default
    assert job["env"]["SUBMITIT_EXECUTOR"] == "orch"
    assert job["workdir"] == os.getcwd()
    auto = submitit.AutoExecutor("log_test", cluster="orch", orch_mode="embedded")
    auto.update_parameters(timeout_min=1, orch_shape="2x1x1", orch_signal_delay_s=20)
    inner = auto._executor
    assert isinstance(inner, OrchExecutor) and inner.mode == "embedded"
    job = inner.job_mapping()
    assert job["shape"] == "2x1x1" and "nodes" not in job
    assert job["env"]["ORCH_SIGNAL"] == "USR2@20"
    with pytest.raises(ValueError, match="unknown parameter"):
        executor.update_parameters(orch_colour="blue")


def test_exception_stdout_and_state() -> None:
    executor = orchestrator.Executor("log_test")
    executor.update_parameters(timeout_min=1)
    job = executor.submit(fail, "boom")
    error = job.exception()
    assert isinstance(error, submitit.core.utils.FailedJobError)
    assert "ValueError: boom" in str(error)
    with pytest.raises(submitit.core.utils.FailedJobError):
        job.result()
    assert "about to fail" in (job.stdout() or "")
    deadline = time.monotonic() + 20  # the result is written before the process exits
    while job.state == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.state == "FAILED"


def test_cancel() -> None:
    executor = orchestrator.Executor("log_test")
    executor.update_parameters(timeout_min=1)
    job = executor.submit(time.sleep, 60)
    deadline = time.monotonic() + 20
    while job.state != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.05)
    job.cancel()
    assert isinstance(job.exception(), submitit.core.utils.UncompletedJobError)
    assert job.state == "CANCELLED" and job.done()


SCRIPT = """
import time, orchestrator
def slow(x):
    time.sleep(4)
    return x
executor = orchestrator.Executor("log_test", on_exit={on_exit!r})
executor.update_parameters(timeout_min=1)
job = executor.submit(slow, 3)
print(job.job_id, flush=True)
"""


@pytest.mark.parametrize(("on_exit", "finished"), [("wait", True), ("cancel", False)])
def test_the_end_of_the_script_waits_for_or_cancels_its_jobs(
    tmp_path: Path, on_exit: str, finished: bool
) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT.format(on_exit=on_exit))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    job_id = done.stdout.strip()
    assert (tmp_path / "log_test" / f"{job_id}_0_result.pkl").exists() is finished
    said = "orch: waiting for 1 job(s)" if finished else "cancelling 1 job(s)"
    assert said in done.stderr, done.stderr


def test_from_state_dir_takes_a_str(tmp_path: Path) -> None:
    root = tmp_path / "state"
    with pytest.raises(DaemonError, match=str(root)):
        DaemonClient.from_state_dir(str(root))
    root.mkdir()
    info = {
        "pid": os.getpid(),
        "start_ticks": process_start_ticks(os.getpid()),
        "url": "http://127.0.0.1:9",
    }
    DaemonFiles(root).info.write_text(json.dumps(info))
    client = DaemonClient.from_state_dir(str(root))
    assert client.url == "http://127.0.0.1:9"
    client.close()


def test_importing_orchestrator_loads_no_submitit_until_executor_is_used() -> None:
    """Issue 16: ``orchestrator.Executor`` and ``orchestrator.trial`` import nothing heavy until
    used (submitit alone costs about 0.1 s), so the command line stays fast."""
    import subprocess
    import sys

    code = (
        "import sys, orchestrator\n"
        "before = sorted(m for m in ('submitit', 'optuna', 'torch') if m in sys.modules)\n"
        "orchestrator.Executor\n"
        "print(before, 'submitit' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[] True"
