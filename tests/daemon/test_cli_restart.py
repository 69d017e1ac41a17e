"""``orch submit`` and ``orch cancel`` wait out a daemon restart instead of failing at once
(issue 13), and nothing is submitted twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from daemon_helpers import REPO, start_daemon, stop_daemon


def orch_process(root: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "ORCH_STATE_DIR": str(root)}
    env.pop("ORCH_URL", None)
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "orch"), *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_submit_and_cancel_wait_for_a_restarting_daemon(tmp_path: Path) -> None:
    root = tmp_path / "state"
    first = start_daemon(root, "--nodes", "1")
    stop_daemon(first)
    submit = orch_process(root, "submit", "--parsable", "-N", "1", "-H", "--", "true")
    time.sleep(1.5)  # the command is waiting, not failed
    assert submit.poll() is None
    second = start_daemon(root, "--nodes", "1")
    try:
        out, err = submit.communicate(timeout=60)
        assert submit.returncode == 0, err
        assert "waiting up to" in err
        job = int(out.strip())
        client = second.client()
        assert [j["id"] for j in client.jobs(state="HELD")] == [job]
        second.kill(signal.SIGTERM)  # not stop_daemon: that cancels the jobs first
        cancel = orch_process(root, "cancel", str(job))
        time.sleep(1.0)
        third = start_daemon(root, "--nodes", "1")
        out, err = cancel.communicate(timeout=60)
        assert cancel.returncode == 0, err
        assert third.client().job(job)["state"] == "CANCELLED"
        stop_daemon(third)
    finally:
        stop_daemon(second)


def test_queue_does_not_wait_and_a_fresh_folder_fails_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    submit = orch_process(tmp_path / "never", "submit", "-N", "1", "--", "true")
    _, err = submit.communicate(timeout=60)
    assert submit.returncode != 0 and "no daemon runs" in err
    assert time.monotonic() - started < 10
