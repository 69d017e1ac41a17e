"""The daemon schedules with a policy written by `orch tune` (``--order tuned:FILE``)."""

from __future__ import annotations

import sys
from pathlib import Path

from daemon_helpers import start_daemon, wait_for

from orchestrator.scheduling.policies import Backfill
from orchestrator.scheduling.tuned import TunedPolicy, save_policy


def test_the_daemon_starts_the_job_the_tuned_policy_puts_first(tmp_path: Path) -> None:
    # Shortest estimate first, tuned with no backfilling: with FCFS (the default) the long job,
    # submitted first, would start first.
    policy = tmp_path / "sjf-like.yaml"
    save_policy(
        TunedPolicy(family="score", weights={"runtime": 1.0}, backfill=Backfill.NONE), policy
    )
    daemon = start_daemon(tmp_path / "state", "--nodes", "1", "--order", f"tuned:{policy}")
    try:
        client = daemon.client()
        (blocker,) = client.submit(
            {"argv": [sys.executable, "-c", "import time; time.sleep(1.5)"], "nodes": 1, "time": 60}
        )
        wait_for(lambda: client.job(blocker)["state"] == "RUNNING")
        (long_job,) = client.submit({"argv": ["true"], "nodes": 1, "time": 3600})
        (short_job,) = client.submit({"argv": ["true"], "nodes": 1, "time": 60})
        done = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}
        wait_for(
            lambda: all(client.job(j)["state"] in done for j in (long_job, short_job)), timeout=60
        )
        long_start = client.job(long_job)["start_time"]
        short_start = client.job(short_job)["start_time"]
        assert short_start < long_start, (short_start, long_start)
    finally:
        daemon.kill()


def test_a_bad_policy_file_stops_the_daemon_start_with_the_field(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from orchestrator.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("format: orchestrator.tuned-policy/1\nfamily: score\nweights: {speed: 2}\n")
    result = CliRunner().invoke(
        main,
        [
            "daemon",
            "start",
            "--state-dir",
            str(tmp_path / "s"),
            "--nodes",
            "1",
            "--order",
            f"tuned:{bad}",
        ],
    )
    assert result.exit_code == 2
    assert "weights.speed" in result.output and "--order" in result.output
