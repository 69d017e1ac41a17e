"""The root group ``orch``, holding the commands that the modules beside it define.

Each command is imported when it is run (or listed by ``--help``), not when ``orch`` starts:
``orch submit`` then loads the client and click, not numpy, pandas or rich (a test checks it),
since a command line that answers in tens of milliseconds is what Slurm's users expect.
"""

from __future__ import annotations

import importlib

import click

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, str] = {
    # simulate.py: the scheduler on a virtual clock, the cluster presets, the demo.
    "simulate": "orchestrator.cli.simulate:simulate",
    "clusters": "orchestrator.cli.simulate:clusters",
    "demo": "orchestrator.cli.simulate:demo",
    # tune.py: a scheduling policy searched on a trace's own jobs.
    "tune": "orchestrator.cli.tune:tune",
    # daemon_commands.py: starting and stopping the daemon; jobs.py: its jobs (Slurm's option
    # names where they exist).
    "daemon": "orchestrator.cli.daemon_commands:daemon",
    "submit": "orchestrator.cli.jobs:submit",
    "queue": "orchestrator.cli.jobs:queue",
    "show": "orchestrator.cli.jobs:show",
    "history": "orchestrator.cli.jobs:history",
    "cancel": "orchestrator.cli.jobs:cancel",
    "hold": "orchestrator.cli.jobs:hold",
    "release": "orchestrator.cli.jobs:release",
    "logs": "orchestrator.cli.jobs:logs",
    "nodes": "orchestrator.cli.jobs:nodes",
    # report.py: the end of a sweep, and the performance model past this machine.
    "report": "orchestrator.cli.report:report",
    "predict": "orchestrator.cli.report:predict",
    # sweep.py: following sweeps launched through hydra/launcher=orch.
    "sweep": "orchestrator.cli.sweep:sweep",
}
"""Command name -> ``module:attribute`` of its click command."""


class LazyGroup(click.Group):
    """A group whose commands are imported by name on first use (click's documented pattern
    for lazily loaded subcommands)."""

    def __init__(self, *args: object, lazy: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module_name, _, attribute = self.lazy[cmd_name].partition(":")
            command = getattr(importlib.import_module(module_name), attribute)
            assert isinstance(command, click.Command), self.lazy[cmd_name]
            return command
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(package_name="orchestrator")
def main() -> None:
    """orchestrator: topology-aware HPC scheduling, simulation and experiment sweeps."""
