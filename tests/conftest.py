"""The test session's shared fixtures and markers, each defined in one place.

Services come from fixture modules registered below (pytest reads ``pytest_plugins`` only in this
root conftest). Each starts on the first test that asks for it, once per session, and is stopped
at the end by its own PID (Slurm: by ``stop-slurm.sh``, by the PIDs of its daemons):

- ``ray_cluster``: ``tests/ray_cluster_session.py``;
- ``mlflow_store``, ``mlflow_server``: ``tests/mlflow_server_session.py``;
- ``slurm``: ``tests/slurm/slurm_cluster.py``;
- ``pjm_emulator``: ``tests/pjm_emulator/pjm_emu_pytest.py`` (once per test module, not per
  session: a fresh emulated machine for each).

Helpers shared across test folders are imported by their full name, ``tests.<folder>.<module>``
(e.g. ``tests.contract.backend_contract``): ``pythonpath = ["."]`` in pyproject.toml puts the
repository root on ``sys.path``, and ``tests`` then resolves as a namespace package. No folder
here gets an ``__init__.py``: ``tests/launchers`` and ``tests/sweeps`` stay plain folders, never
packages that could be mistaken for the real ``launchers`` and ``sweeps``.

Markers: ``service`` is put here on every test that starts an external service (see
``SERVICE_FIXTURES`` and ``SERVICE_TESTS``), ``slow`` on the slowest of the others
(``SLOW_TESTS``); ``make test-fast`` runs ``pytest -m "not service and not slow"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

# Shared helpers whose plain ``assert`` statements are tests of their own (the contract suite's
# methods): rewritten like test modules, for pytest's detailed failure messages.
pytest.register_assert_rewrite("tests.contract.backend_contract")

pytest_plugins = [
    "tests.ray_cluster_session",
    "tests.mlflow_server_session",
    "tests.slurm.slurm_cluster",
    "tests.pjm_emulator.pjm_emu_pytest",
]

REPO = Path(__file__).resolve().parents[1]
SHARED_TRACES = REPO.parent / "shared" / "data" / "traces"
SHIPPED_TRACE = REPO / "orchestrator" / "data" / "lublin_256.swf.gz"

#: Fixtures that start an external service or a long-lived process of ours: a test that uses one,
#: directly or through another fixture, is marked ``service``.
SERVICE_FIXTURES = frozenset(
    {
        "slurm",  # the real local Slurm (../shared/slurm), tests/slurm/slurm_cluster.py
        "ray_cluster",  # a four-raylet Ray cluster, tests/ray_cluster_session.py
        "mlflow_server",  # `mlflow server`, tests/mlflow_server_session.py
        "recorded",  # tests/reports: a real experiment recorded (training jobs, torchrun)
        "pjm_emulator",  # the PJM emulator: every job a detached runner process
        "postgres",  # tests/daemon/conftest.py: a real PostgreSQL server
        "shared_daemon",  # tests/daemon/conftest.py: a real `orch daemon` process
        # `orch daemon` processes of one module each:
        "limited",  # tests/daemon/test_api_limits.py
        "open_folder_daemon",  # tests/daemon/test_api_security.py
        "shared_socket",  # tests/daemon/test_api_shared.py
        "shared_tcp",  # tests/daemon/test_api_shared.py
        "daemon",  # tests/hydra/test_hydra_daemon.py
    }
)

#: Tests that start such a service in their own body (keys: a file, or a test with or without its
#: parameters, relative to tests/), with what they start.
SERVICE_TESTS = {
    "daemon/test_api_daemon.py::test_orch_daemon_start_status_stop": "`orch daemon start`",
    "daemon/test_api_daemon.py::test_unix_socket_api_is_owner_only": "a daemon process",
    "daemon/test_api_security.py::test_non_loopback_bind_needs_expose": "daemon processes",
    "daemon/test_api_web.py": "a daemon process and headless Chromium",
    "daemon/test_cli_restart.py::test_submit_and_cancel_wait_for_a_restarting_daemon": (
        "a daemon process, stopped and started again"
    ),
    "daemon/test_daemon_recovery.py": "daemon processes, killed and restarted",
    "daemon/test_store_backends.py::test_migration_matches_the_schema_and_is_idempotent"
    "[postgresql]": "PostgreSQL (the `store` fixture asks for `postgres` by name)",
    "daemon/test_store_backends.py::test_daemon_runs_jobs_and_the_log_replays[postgresql]": (
        "PostgreSQL (as above)"
    ),
}

#: The slowest of the other tests, left out of the fast lane to keep it under two minutes on two
#: shared cores (keys as above), with their time there (`--durations`, 2 cores shared with
#: other work) and why they take it.
SLOW_TESTS = {
    "reports/test_perfmodel_4ranks.py": "170 s: trains under torchrun with four ranks",
    "daemon/test_api_schemathesis.py::test_api_conforms": (
        "100 s: schemathesis sends every operation of the API its generated requests"
    ),
    "daemon/test_daemon_simulation.py::TestDaemonSimulation": (
        "80 s: a Hypothesis state machine, many daemon lifetimes"
    ),
    "sweeps/test_train_resume.py::test_signal_to_one_rank_stops_both_and_two_rank_resume_equals"
    "_uninterrupted": "90 s: training runs under torchrun, two ranks, stopped and resumed",
    "sweeps/test_train_resume.py::test_sigterm_then_resume_equals_uninterrupted_run": (
        "45 s: training runs in subprocesses, stopped by SIGTERM and resumed"
    ),
    "sweeps/test_train_mlflow.py::test_torchrun_two_ranks_match_one_rank_and_only_rank0_logs": (
        "25 s: training under torchrun, two ranks"
    ),
    "sweeps/test_kfac_distributed.py": "35 s: two-rank gloo process groups",
    "hydra/test_hydra_sweeper.py::test_async_sweep_with_pruning": "45 s: an Optuna multirun",
    "hydra/test_hydra_sweeper.py::test_nas_pareto_front": "40 s: an NSGA-II multirun",
    "hydra/test_hydra_sweeper.py::test_sweep_through_grpc_storage_proxy": (
        "18 s: a multirun through Optuna's gRPC storage proxy"
    ),
    "hydra/test_hydra_sweeper.py::test_resume_and_failure_records": "14 s: two multiruns",
    "hydra/test_presets.py": "45 s: the shipped presets' multiruns, real training jobs",
    "sweeps/test_trial_api.py::test_a_users_app_is_pruned": "20 s: two Optuna multiruns",
    "sweeps/test_trial_api.py::test_grid_runs_every_point_once": "6 s: a grid multirun",
    "hydra/test_forkserver.py": "35 s: multiruns through the fork server",
    "scheduling/test_simulation_steps.py::test_stepping_a_torus_and_a_tree_equals_simulate": (
        "15 s: whole trace replays, stepped and in one go"
    ),
    "scheduling/test_simulator.py::test_flat_invariants": (
        "25 s: whole trace replays, 16 policy and backfilling pairs"
    ),
    "scheduling/test_simulator.py::test_torus_invariants_and_reservations[conservative]": (
        "2.5 to 4 s: a whole trace replay with conservative backfilling"
    ),
    "scheduling/test_simulator.py::test_reservations_are_never_delayed[conservative]": (
        "2 to 2.5 s: as above"
    ),
    "scheduling/test_simulator.py::test_backfilling_helps_and_modes_differ": (
        "2 to 3.5 s: a trace replayed under every backfilling mode"
    ),
    "scheduling/test_simulator.py::test_rlscheduler_protocol_schedgym_reproduces_the_published"
    "_table": "4 s: the RLScheduler protocol's replays of lublin_256",
    "scheduling/test_simulator.py::test_rlscheduler_protocol_matches_published_magnitudes_and"
    "_ranking": "3 s: as above",
    "scheduling/test_cli.py::test_protocol_json": "5 s: as above, through `orch simulate`",
    "hydra/test_hydra_launcher_suites.py::TestOrchLauncherIntegration": (
        "20 to 50 s: Hydra's integration suite, each test a Python process running a multirun"
    ),
    "hydra/test_hydra_daemon.py::test_bad_resources_name_the_field": (
        "3 s: two Hydra apps in Python processes"
    ),
    "sweeps/test_train_config.py::test_cli_prints_the_field_and_exits_2": (
        "5 s: Python processes that import torch"
    ),
    "daemon/test_backend_hooks.py::test_unavailable_nodes_are_never_given": (
        "5 s: four real jobs, one at a time on the one node left, through daemon ticks"
    ),
}


def _listed(table: Mapping[str, str], item: pytest.Item) -> bool:
    """Whether the item's file, class or test (with or without its parameters) is a key."""
    node = item.nodeid.removeprefix("tests/")
    parts = node.partition("[")[0].split("::")
    return node in table or any("::".join(parts[:i]) in table for i in range(1, len(parts) + 1))


def pytest_configure(config: pytest.Config) -> None:
    # Registered here, not in pyproject.toml: the tables above decide who carries them.
    config.addinivalue_line(
        "markers",
        "service: starts an external service (Slurm, Ray, an MLflow server, PostgreSQL, the PJM "
        "emulator, a daemon process); left out by `make test-fast`",
    )
    config.addinivalue_line(
        "markers",
        "slow: one of the slowest tests that start no service; left out by `make test-fast`",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    used: set[str] = set()
    for item in items:
        if SERVICE_FIXTURES.intersection(item.fixturenames) or _listed(SERVICE_TESTS, item):
            item.add_marker(pytest.mark.service)
        if _listed(SLOW_TESTS, item):
            item.add_marker(pytest.mark.slow)
        used.update(key for key in (*SERVICE_TESTS, *SLOW_TESTS) if _listed({key: ""}, item))
    whole_suite = not config.args or [Path(a).resolve() for a in config.args] == [REPO / "tests"]
    stale = sorted((set(SERVICE_TESTS) | set(SLOW_TESTS)) - used)
    if whole_suite and not config.getoption("keyword") and stale:
        # A renamed or removed test would silently leave the fast lane's tables.
        raise pytest.UsageError(f"tests/conftest.py names tests that do not exist: {stale}")


@pytest.fixture(scope="session")
def shipped_trace() -> Path:
    return SHIPPED_TRACE


@pytest.fixture(scope="session")
def shared_traces() -> Path:
    if not SHARED_TRACES.is_dir():
        pytest.fail(
            f"the shared traces are missing: expected {SHARED_TRACES} (../shared beside the repo)"
        )
    return SHARED_TRACES


@pytest.fixture
def check_golden(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """``check_golden(NAME, text)``: compare ``text`` with ``golden/NAME`` beside the test file;
    ``ORCH_UPDATE_GOLDEN=1`` rewrites the file instead."""
    folder = request.path.parent / "golden"

    def check(name: str, text: str) -> None:
        path = folder / name
        if os.environ.get("ORCH_UPDATE_GOLDEN") == "1":
            folder.mkdir(exist_ok=True)
            path.write_text(text)
        assert path.exists(), f"missing {path}: run with ORCH_UPDATE_GOLDEN=1 to create it"
        assert text == path.read_text(), (
            f"{name} changed; if intended, refresh with "
            f"ORCH_UPDATE_GOLDEN=1 pytest {request.path.relative_to(REPO)}"
        )

    return check
