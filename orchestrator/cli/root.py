"""The root group ``orch``, holding the commands that the modules beside it define."""

from __future__ import annotations

import click

from orchestrator.cli.jobs import cancel, daemon, hold, logs, nodes, queue, release, show, submit
from orchestrator.cli.report import predict, report
from orchestrator.cli.simulate import clusters, demo, simulate
from orchestrator.cli.sweep import sweep

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="orchestrator")
def main() -> None:
    """orchestrator: topology-aware HPC scheduling, simulation and experiment sweeps."""


# simulate.py: the scheduler on a virtual clock, the cluster presets, the demo.
main.add_command(simulate)
main.add_command(clusters)
main.add_command(demo)
# jobs.py: the daemon and its jobs (Slurm's option names where they exist).
main.add_command(daemon)
main.add_command(submit)
main.add_command(queue)
main.add_command(show)
main.add_command(cancel)
main.add_command(hold)
main.add_command(release)
main.add_command(logs)
main.add_command(nodes)
# report.py: the end of a sweep, and the performance model past this machine.
main.add_command(report)
main.add_command(predict)
# sweep.py: following sweeps launched through hydra/launcher=orch.
main.add_command(sweep)
