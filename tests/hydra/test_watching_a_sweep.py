"""Watching a sweep (issue 16): the launcher's line per finished trial, ``orch sweep status``'s
table of trials (one-shot and ``--watch``), per-job resources from a swept key, and the study in
optuna-dashboard (``orch sweep dashboard``) seen by headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sweep_test_helpers import APPS, REPO, free_port, objective_app, run, wait_port

from orchestrator.trial import open_storage

ARTIFACTS = REPO / "test-artifacts"


def _orch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def _sweep_id(sweep_dir: Path) -> tuple[str, Path]:
    state_dir = sweep_dir / ".orch_launcher" / "orch"
    (manifest,) = (state_dir / "sweeps").glob("*.json")
    return manifest.stem, state_dir


def _trial_sweep(tmp_path: Path) -> Path:
    """A pruning sweep of trial_app, one trial at a time (a deterministic pruning order)."""
    sweep_dir = tmp_path / "sweep"
    run(
        [
            sys.executable,
            str(APPS / "trial_app.py"),
            "-m",
            "hydra/launcher=orch",
            "hydra/sweeper=orch_optuna",
            "+steps=6",
            "+slope=choice(1.0,0.5,0.2,0.1)",
            "hydra.sweeper.direction=maximize",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=1",
            "hydra.sweeper.sampler.name=grid",
            "hydra.sweeper.sampler.seed=3",
            "hydra.sweeper.pruner.name=median",
            "hydra.sweeper.pruner.n_startup_trials=1",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        tmp_path,
    )
    return sweep_dir


def test_the_launcher_prints_a_line_per_finished_trial_and_no_alembic_lines(
    tmp_path: Path,
) -> None:
    proc = run(
        objective_app("+x=0.1,0.2", "hydra/launcher=orch", f"hydra.sweep.dir={tmp_path}/s"),
        tmp_path,
    )
    text = proc.stdout + proc.stderr
    assert "setup plugin" not in text, text
    assert "alembic" not in text, text
    # One line per finished job: its index, scheduler job, state, return value and time.
    lines = [line for line in text.splitlines() if "finished" in line]
    assert len(lines) == 2, text
    for idx, value in ((0, "-0.0399999"), (1, "-0.00999")):  # -(x - 0.3)^2
        pattern = rf"#{idx} job \d+ finished COMPLETED in \d+\.\d s: {re.escape(value)}"
        assert any(re.search(pattern, line) for line in lines), (pattern, lines)


def test_a_failed_job_s_line_says_why(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run(
        objective_app(
            "+x=0.9", "+fail_above=0.5", "hydra/launcher=orch", f"hydra.sweep.dir={tmp_path}/s"
        ),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    text = proc.stdout + proc.stderr
    assert re.search(r"#0 job \d+ finished FAILED in \d+\.\d s: ValueError: x=0\.9", text), text


def test_a_launcher_field_may_follow_a_swept_key(tmp_path: Path) -> None:
    """``+nodes=1,2 'hydra.launcher.nodes=${nodes}'``: each job gets its own node count (Hydra
    resolves hydra.launcher before any job exists, where ``nodes`` is not yet defined)."""
    sweep_dir = tmp_path / "sweep"
    run(
        objective_app(
            "+x=0.1",
            "+nodes=1,2",
            "hydra.launcher.nodes=${nodes}",
            "hydra/launcher=orch",
            f"hydra.sweep.dir={sweep_dir}",
        ),
        tmp_path,
    )
    sweep_id, state_dir = _sweep_id(sweep_dir)
    status = _orch("sweep", "status", sweep_id, "--state-dir", str(state_dir), "--json")
    assert status.returncode == 0, status.stderr
    trials = {t["trial"]: t for t in json.loads(status.stdout)["trials"]}
    assert [len(trials[i]["nodes"]) for i in (0, 1)] == [1, 2], trials


def test_an_unresolvable_launcher_field_fails_with_a_clear_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run(
        objective_app(
            "+x=0.1", "hydra.launcher.nodes=${oc.env:NO_SUCH_VAR}", "hydra/launcher=orch"
        ),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode != 0
    assert "hydra.launcher.nodes" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_status_shows_the_trials_and_ends_with_the_best(tmp_path: Path) -> None:
    sweep_dir = _trial_sweep(tmp_path)
    sweep_id, state_dir = _sweep_id(sweep_dir)
    study = optuna.load_study(
        study_name="trial_app", storage=open_storage(f"journal:{sweep_dir / 'optuna.journal'}")
    )
    pruned = [t for t in study.trials if t.state is TrialState.PRUNED]
    assert pruned, [(t.params, t.state) for t in study.trials]

    doc = json.loads(
        _orch("sweep", "status", sweep_id, "--state-dir", str(state_dir), "--json").stdout
    )
    by_number = {t["trial"]: t for t in doc["trials"]}
    assert sorted(by_number) == [0, 1, 2, 3]
    for t in study.trials:
        row = by_number[t.number]
        assert row["state"] == t.state.name
        assert row["params"] == t.params
        assert len(row["nodes"]) == 1
        if t.state is TrialState.PRUNED:
            assert row["pruned_at_step"] == max(t.intermediate_values)
        else:
            assert row["pruned_at_step"] is None
            assert row["values"] == t.values
    assert doc["best"]["trial"] == study.best_trial.number
    assert doc["ended"] is True

    table = _orch("sweep", "status", sweep_id, "--state-dir", str(state_dir))
    assert table.returncode == 0, table.stderr
    out = table.stdout
    for header in ("trial", "state", "parameters", "value", "pruned at step", "node(s)"):
        assert header in out, out
    assert "PRUNED" in out and "COMPLETE" in out
    step = max(pruned[0].intermediate_values)
    assert re.search(rf"PRUNED .*slope={pruned[0].params['slope']}.* {step} ", out), out
    last = [line for line in out.splitlines() if line.strip()][-1]
    assert last.startswith(f"best trial: #{study.best_trial.number}"), out
    assert f"slope={study.best_trial.params['slope']}" in last

    # --watch on a sweep that has ended: one table, then it returns.
    started = time.monotonic()
    watched = _orch(
        "sweep", "status", sweep_id, "--state-dir", str(state_dir), "--watch", "--interval", "0.2"
    )
    assert watched.returncode == 0, watched.stderr
    assert "best trial: #" in watched.stdout
    assert time.monotonic() - started < 60


def test_watch_follows_a_running_sweep_until_it_ends(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    argv = objective_app(
        "+x=0.1,0.2",
        "+sleep=2.0",
        "hydra/launcher=orch",
        "hydra.launcher.fork_server=false",
        f"hydra.sweep.dir={sweep_dir}",
    )
    app = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not list((sweep_dir / ".orch_launcher" / "orch" / "sweeps").glob("*.json")):
            assert app.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        sweep_id, state_dir = _sweep_id(sweep_dir)
        watched = _orch(
            "sweep", "status", sweep_id, "--state-dir", str(state_dir), "--watch", "--interval",
            "0.2",
        )  # fmt: skip
        assert watched.returncode == 0, watched.stderr
        # It returned once the sweep ended: both jobs done.
        assert watched.stdout.count("COMPLETED") == 2, watched.stdout
    finally:
        if app.poll() is None:
            os.kill(app.pid, signal.SIGTERM)
        app.wait(60)


def _dashboard_sweep(tmp_path: Path) -> Path:
    sweep_dir = tmp_path / "sweep"
    run(
        [
            sys.executable,
            str(APPS / "two_objectives_app.py"),
            "-m",
            "hydra/launcher=orch",
            "hydra/sweeper=orch_optuna",
            "+x=choice(0.0,0.1,0.5,0.9)",
            "hydra.sweeper.direction=[maximize,minimize]",
            "hydra.sweeper.study_name=pareto",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.sampler.name=grid",
            "hydra.sweeper.sampler.seed=0",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        tmp_path,
    )
    return sweep_dir


def test_dashboard_shows_the_trials_and_the_pareto_front(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "tests" / "daemon"))
    from daemon_helpers import chromium  # how Chromium runs here (tests/daemon)

    sweep_dir = _dashboard_sweep(tmp_path)
    sweep_id, state_dir = _sweep_id(sweep_dir)
    printed = _orch("sweep", "dashboard", sweep_id, "--state-dir", str(state_dir), "--print")
    assert printed.returncode == 0, printed.stderr
    assert "optuna-dashboard" in printed.stdout and "optuna.journal" in printed.stdout

    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "sweep",
            "dashboard",
            sweep_id,
            "--state-dir",
            str(state_dir),
            "--port",
            str(port),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_port(port, server)
        url = f"http://127.0.0.1:{port}/dashboard/studies/0"
        dom = chromium(url, tmp_path / "profile", "--dump-dom", budget_ms=15000)
        assert "pareto" in dom, dom[:2000]  # the study's name
        assert "Pareto Front" in dom, dom[:4000]
        for number in range(4):
            assert f"Trial {number}" in dom or f"#{number}" in dom, dom[:4000]
        trials = chromium(f"{url}/trials", tmp_path / "profile", "--dump-dom", budget_ms=15000)
        for number in range(4):
            assert f"Trial {number}" in trials, trials[:4000]
        ARTIFACTS.mkdir(exist_ok=True)
        shot = tmp_path / "dashboard.png"
        chromium(
            url,
            tmp_path / "profile",
            f"--screenshot={shot}",
            "--window-size=1400,1000",
            budget_ms=15000,
        )
        assert shot.stat().st_size > 10_000
        shutil.copy(shot, ARTIFACTS / "optuna-dashboard.png")
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGTERM)
        server.wait(30)
    out = server.stdout.read().decode() if server.stdout else ""
    assert f"http://127.0.0.1:{port}/dashboard/studies/0" in out, out


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "journal:/x/optuna.journal",
            ["/x/optuna.journal", "--storage-class", "JournalFileStorage"],
        ),
        ("sqlite:////x/o.db", ["sqlite:////x/o.db"]),
    ],
)
def test_dashboard_command_line(spec: str, expected: list[str]) -> None:
    from orchestrator.cli.sweep import dashboard_argv

    argv = dashboard_argv(spec, "127.0.0.1", 8080)
    assert argv[0] == "optuna-dashboard"
    assert argv[1 : 1 + len(expected)] == expected
    assert argv[-4:] == ["--host", "127.0.0.1", "--port", "8080"]
