"""The launcher's fork server: trials forked from a server that imported the app once, each still
a job of the scheduler (its own id, environment, output, walltime and signals), and the fresh
interpreter when the server cannot be reached."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from sweep_test_helpers import APPS, REPO, run


def probe(*overrides: str) -> list[str]:
    return [sys.executable, str(APPS / "probe_app.py"), "-m", *overrides]


def records(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def server_pid(sweep: Path) -> int:
    text = (sweep / ".orch_launcher" / "forkserver.log").read_text()
    match = re.search(r"orch fork server: pid (\d+)", text)
    assert match, text
    return int(match.group(1))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def job_states(sweep: Path) -> dict[int, str]:
    with sqlite3.connect(sweep / ".orch_launcher" / "orch" / "orch.db") as db:
        return dict(db.execute("SELECT id, state FROM jobs").fetchall())


def test_trials_are_forked_jobs_with_their_own_environment(tmp_path: Path) -> None:
    sweep, log = tmp_path / "sweep", tmp_path / "log"
    overrides = ("+x=0,1,2", f"+log={log}", "hydra/launcher=orch")
    run(probe(*overrides, f"hydra.sweep.dir={sweep}"), tmp_path)
    trials = records(log)
    assert sorted(t["x"] for t in trials) == [0, 1, 2]
    server = server_pid(sweep)
    # Forked by the server, each as its own scheduler job, in the sweep's working folder.
    assert {t["ppid"] for t in trials} == {server}
    assert len({t["job_id"] for t in trials}) == 3
    assert {t["cwd"] for t in trials} == {str(tmp_path)}
    # Only we may reach the socket; a fork does not repeat the server's random state.
    assert {t["socket_dir_mode"] for t in trials} == {0o700}
    assert len({t["draw"] for t in trials}) == 3
    # The trial's output lands in its job's stdout, and the server is gone after the sweep.
    for t in trials:
        out = sweep / ".orch_launcher" / "orch" / "jobs" / str(t["job_id"]) / "stdout"
        assert f"trial {t['x']} says hello" in out.read_text()
    assert not alive(server)
    assert set(job_states(sweep).values()) == {"COMPLETED"}


def test_without_the_fork_server_each_trial_is_a_fresh_interpreter(tmp_path: Path) -> None:
    sweep, log = tmp_path / "sweep", tmp_path / "log"
    overrides = ("+x=0,1", f"+log={log}", "hydra/launcher=orch", "hydra.launcher.fork_server=false")
    run(probe(*overrides, f"hydra.sweep.dir={sweep}"), tmp_path)
    trials = records(log)
    assert len(trials) == 2
    assert not (sweep / ".orch_launcher" / "forkserver.log").exists()
    assert {t["socket_dir_mode"] for t in trials} == {None}


def test_walltime_signals_reach_the_forked_trial(tmp_path: Path) -> None:
    """The scheduler's SIGTERM at the walltime is relayed to the trial (x=0 records it); a trial
    that ignores it (x=1) dies with its job when the scheduler kills the job after the grace."""
    sweep, log = tmp_path / "sweep", tmp_path / "log"
    argv = probe(
        "+x=0,1",
        f"+log={log}",
        "+sleep=120",
        "+record_term=true",
        "+ignore_term_x=1",
        "hydra/launcher=orch",
        "hydra.launcher.time=3",
        f"hydra.sweep.dir={sweep}",
    )
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    started = time.monotonic()
    proc = subprocess.run(
        argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    elapsed = time.monotonic() - started
    assert proc.returncode != 0  # the basic sweeper raises the first failed job's error
    assert elapsed < 60, proc.stderr[-3000:]
    trials = {int(t["x"]): t for t in records(log)}
    terms = [line.split() for line in log.read_text().splitlines() if line.startswith("term")]
    assert [int(t[1]) for t in terms] == [trials[0]["pid"]]
    assert not alive(int(trials[0]["pid"])) and not alive(int(trials[1]["pid"]))
    assert set(job_states(sweep).values()) == {"TIMEOUT"}


def test_a_client_without_its_server_runs_the_trial_itself(tmp_path: Path) -> None:
    sweep, log = tmp_path / "sweep", tmp_path / "log"
    run(probe("+x=4", f"+log={log}", "hydra/launcher=orch", f"hydra.sweep.dir={sweep}"), tmp_path)
    folder = sweep / ".orch_launcher" / "job-0"
    (folder / "result.pkl").unlink()
    client = REPO / "hydra_plugins" / "orch_launcher" / "_fsclient.py"
    env = {**os.environ, "PYTHONPATH": str(REPO), "ORCH_FORKSERVER": str(tmp_path / "gone.sock")}
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(client), str(folder)], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (folder / "result.pkl").exists()
    second = records(log)[-1]
    assert second["x"] == 4 and second["ppid"] != server_pid(sweep)
