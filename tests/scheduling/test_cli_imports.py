"""The job commands start quickly: resolving them loads none of the heavy libraries (issue 17:
``orch submit`` took 222 ms against sbatch's 4-18 ms, most of it numpy through the simulator's
modules, which every command imported)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("numpy", "pandas", "torch", "pydantic", "fastapi", "submitit", "optuna", "rich", "yaml")

PROBE = """
import json, sys, click
from orchestrator.cli import main
ctx = click.Context(main)
for name in sys.argv[1:]:
    command = main.get_command(ctx, name)
    assert command is not None, name
print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
"""


def _loaded(*commands: str) -> set[str]:
    # A fresh interpreter: this test process has imported everything already.
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *commands], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


def test_submit_queue_and_cancel_load_no_heavy_library() -> None:
    loaded = _loaded("submit", "queue", "cancel", "show", "hold", "release")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_probe_sees_a_heavy_import() -> None:
    # The simulator's command does load numpy: the probe above can fail.
    assert "numpy" in _loaded("simulate")


def test_help_still_lists_every_command() -> None:
    from click.testing import CliRunner

    from orchestrator.cli import main
    from orchestrator.cli.root import COMMANDS

    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line}
    assert listed == set(COMMANDS)
