"""Hydra's own launcher test suites, run against ``hydra/launcher=orch`` (embedded scheduler).

Every job really runs as a job of an in-process daemon: a separate process on an allocated
process-node of the ``local`` cluster, its result pickled back.
"""

from __future__ import annotations

from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from pytest import mark

from hydra_plugins.orch_launcher.orch_launcher import OrchLauncher


def test_discovery() -> None:
    """Hydra finds the launcher by its namespace package."""
    names = [p.__name__ for p in Plugins.instance().discover(Launcher)]
    assert OrchLauncher.__name__ in names


@mark.parametrize(
    "launcher_name, overrides", [("orch", []), ("orch", ["hydra.launcher.fork_server=false"])]
)
class TestOrchLauncher(LauncherTestSuite):
    """Sweeps of 1 and 2 jobs, strict configs, custom resolvers, hydra overrides; trials forked
    by the sweep's fork server (the default) and in fresh interpreters."""


@mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({}, ["-m", "hydra/launcher=orch"])],
)
class TestOrchLauncherIntegration(IntegrationTestSuite):
    """Whole Hydra apps run as subprocesses with the launcher: job names, working dirs."""
