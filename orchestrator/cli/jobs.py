"""The job commands (Slurm's option names where they exist); ``orch daemon`` is in
:mod:`orchestrator.cli.daemon_commands`.

Thin: parses options, calls :class:`~orchestrator.daemon.client.DaemonClient`, prints.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from orchestrator.daemon.client import ApiError, DaemonClient, default_state_dir
from orchestrator.daemon.state_folder import DaemonFiles
from orchestrator.exceptions import OrchestratorError

__all__ = [
    "cancel",
    "hold",
    "logs",
    "nodes",
    "queue",
    "release",
    "show",
    "submit",
]

UNFINISHED = "PENDING,HELD,STARTING,RUNNING"
"""The states ``queue`` lists and ``cancel``'s filters match unless told otherwise."""

state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="ORCH_STATE_DIR",
    default=None,
    help="The daemon's state folder (default: $ORCH_STATE_DIR or ~/.orch).",
)


RESTART_WAIT_S = 15.0
"""How long a changing command waits for a daemon that ran on the folder before (a restart)."""


def _client(state_dir: Path | None, *, changes: bool = False) -> DaemonClient:
    """The client of the daemon on ``state_dir``; a command that changes something waits up to
    :data:`RESTART_WAIT_S` for a daemon that ran there before (it may be restarting), its
    request then retried with the same idempotency key (nothing is submitted twice)."""
    url = os.environ.get("ORCH_URL")
    if url and state_dir is None:
        # A user of a shared daemon cannot read its state folder: the URL and their own token
        # (orch daemon add-user) come from the environment; on the socket no token is needed.
        return DaemonClient(url, os.environ.get("ORCH_TOKEN") or None)
    root = state_dir or default_state_dir()
    deadline = time.monotonic() + RESTART_WAIT_S
    told = False
    while True:
        try:
            return DaemonClient.from_state_dir(root)
        except OrchestratorError as e:
            ran_here = DaemonFiles(root).token.exists()
            if not (changes and ran_here) or time.monotonic() > deadline:
                raise click.ClickException(str(e)) from e
            if not told:
                click.echo(
                    f"no daemon runs on {root}; waiting up to {RESTART_WAIT_S:g} s in case it "
                    "is restarting",
                    err=True,
                )
                told = True
            time.sleep(0.2)


def _fail(e: Exception) -> click.ClickException:
    if isinstance(e, ApiError) and e.field:
        return click.ClickException(f"{e} [field: {e.field}]")
    return click.ClickException(str(e))


# -- jobs -------------------------------------------------------------------------------------


@click.command(context_settings={"allow_interspersed_args": False})
@state_dir_option
@click.option("-N", "--nodes", type=int, help="Number of nodes.")
@click.option("--shape", help="PJM-style node shape on a torus3d cluster, e.g. 2x2x2:torus.")
@click.option("--ntasks-per-node", type=int, default=1, show_default=True)
@click.option("-c", "--cpus-per-task", type=int, default=1, show_default=True)
@click.option("--gpus-per-task", type=int, default=0, show_default=True)
@click.option("--gpus-per-node", type=int, help="GPUs on each node, shared by its tasks.")
@click.option("-G", "--gpus", type=int, help="GPUs in all, spread evenly over the nodes.")
@click.option("--gres", help="GPUs per node as Slurm's gres: gpu:N or gpu:TYPE:N.")
@click.option("--mem", help="Memory per node: MB, or with a unit (500M, 4G).")
@click.option("--mem-per-gpu", help="Memory per GPU: MB, or with a unit (16G).")
@click.option("--exclusive", is_flag=True, help="Whole nodes (on a cluster that shares nodes).")
@click.option("-p", "--partition", help="Node group (partition) to run in.")
@click.option(
    "-l",
    "--resource-type",
    help="A named resource type of the cluster, NAME or NAME=N (as qsub -l rt_HG=1).",
)
@click.option("-t", "--time", "walltime", help="Walltime limit: seconds or [d-]h:m:s.")
@click.option("-a", "--array", help="Array indices, e.g. 0-99%8 (at most 8 at once).")
@click.option("-d", "--dependency", help="afterok|afterany|afternotok:ID[:ID][,...]")
@click.option("-J", "--job-name", "--name", "name", default="", help="Job name.")
@click.option("-A", "--account", default="")
@click.option("--priority", type=int, default=0)
@click.option("-H", "--hold", is_flag=True, help="Submit held.")
@click.option(
    "-b",
    "--begin",
    help="Earliest start: now+N[minutes|hours|days], YYYY-MM-DDTHH:MM[:SS] or HH:MM[:SS].",
)
@click.option("--retries", type=int, default=0, help="Requeue a failed attempt up to N times.")
@click.option("-D", "--chdir", type=click.Path(file_okay=False), help="Working directory.")
@click.option("--export", "exports", multiple=True, help="VAR=VALUE for the job (repeatable).")
@click.option(
    "--script",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Run this script (its #! line, else /bin/sh).",
)
@click.option("--wrap", help="Run this text with /bin/sh (you ask for a shell).")
@click.option("--parsable", is_flag=True, help="Print only the job id(s).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def submit(
    state_dir: Path | None,
    nodes: int | None,
    shape: str | None,
    ntasks_per_node: int,
    cpus_per_task: int,
    gpus_per_task: int,
    gpus_per_node: int | None,
    gpus: int | None,
    gres: str | None,
    mem: str | None,
    mem_per_gpu: str | None,
    exclusive: bool,
    partition: str | None,
    resource_type: str | None,
    walltime: str | None,
    array: str | None,
    dependency: str | None,
    name: str,
    account: str,
    priority: int,
    hold: bool,
    begin: str | None,
    retries: int,
    chdir: str | None,
    exports: tuple[str, ...],
    script: Path | None,
    wrap: str | None,
    parsable: bool,
    command: tuple[str, ...],
) -> None:
    """Submit COMMAND (run exactly as given, no shell), a --script or a --wrap text."""
    given = sum(x is not None and x != () for x in (script, wrap, command))
    if given != 1:
        raise click.UsageError("give exactly one of COMMAND..., --script FILE or --wrap TEXT")
    job: dict[str, Any] = {
        "name": name or (command[0] if command else script.name if script else "wrap"),
        "tasks_per_node": ntasks_per_node,
        "cpus_per_task": cpus_per_task,
        "gpus_per_task": gpus_per_task,
        "priority": priority,
        "user": getpass.getuser(),
        "account": account,
        "hold": hold,
        "retries": retries,
        "workdir": str(Path(chdir or os.getcwd()).resolve()),
    }
    if nodes is None and shape is None:
        nodes = 1
    for key, value in (
        ("nodes", nodes),
        ("shape", shape),
        ("time", walltime),
        ("array", array),
        ("dependency", dependency),
        ("begin", begin),
        ("gpus_per_node", gpus_per_node),
        ("gpus", gpus),
        ("gres", gres),
        ("mem", int(mem) if mem is not None and mem.isdigit() else mem),
        ("mem_per_gpu", mem_per_gpu),
        ("exclusive", exclusive or None),
        ("partition", partition),
        ("resource_type", resource_type),
    ):
        if value is not None:
            job[key] = value
    if command:
        job["argv"] = list(command)
    elif script is not None:
        job["script"] = script.read_text()
    else:
        job["script"] = f"#!/bin/sh\n{wrap}\n"
    env = _exported(exports)
    if env:
        job["env"] = env
    client = _client(state_dir, changes=True)
    try:
        ids = client.submit(job)
    except OrchestratorError as e:
        raise _fail(e) from e
    _print_submitted(ids, array, parsable)


def _exported(exports: tuple[str, ...]) -> dict[str, str]:
    """``--export VAR=VALUE`` items as a dict."""
    env = {}
    for item in exports:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: expected VAR=VALUE", param_hint="--export")
        env[key] = value
    return env


def _print_submitted(ids: list[int], array: str | None, parsable: bool) -> None:
    if parsable:
        click.echo(str(ids[0]) if not array else ",".join(map(str, ids)))
    elif array:
        click.echo(f"Submitted array job {ids[0]} ({len(ids)} elements: {ids[0]}..{ids[-1]})")
    else:
        click.echo(f"Submitted job {ids[0]}")


def _clock(seconds: float) -> str:
    """``[D-]HH:MM:SS`` (Slurm's form of a duration)."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    text = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def _date(epoch: float | None) -> str:
    """A local date and time as Slurm prints them (``2026-12-07T10:00:00``); ``-`` for none."""
    return "-" if epoch is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch))


def _shown(key: str, value: Any) -> str:
    """A field of ``orch show`` as a person reads it: times as local dates (as scontrol's
    ``SubmitTime=2026-12-07T10:00:00``), the time limit as ``HH:MM:SS``."""
    if value is None:
        return "-"
    if key in ("submit_time", "start_time", "end_time"):
        return _date(value)
    if key == "time":
        return _clock(value)
    return str(value)


def _last_nodelist(allocations: list[dict[str, Any]]) -> str:
    from orchestrator.resources.hostlist import compress_hostlist

    last = max(a["attempt"] for a in allocations)
    return compress_hostlist([a["node"] for a in allocations if a["attempt"] == last])


def _elapsed(job: dict[str, Any]) -> str:
    start = job["start_time"]
    if start is None:
        return "0:00"
    from orchestrator.scheduling.job import FINISHED_VALUES  # only queue's rows need it

    end = job["end_time"] if job["state"] in FINISHED_VALUES and job["end_time"] else time.time()
    seconds = int(max(0.0, end - start))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@click.command()
@state_dir_option
@click.option("-u", "--user", help="Only this user's jobs.")
@click.option("-n", "--name", help="Only jobs of this name.")
@click.option("-p", "--partition", help="Only jobs of this partition (node group).")
@click.option(
    "-t",
    "--state",
    "--states",
    "states",
    help="Comma list of states (default: waiting and running).",
)
@click.option("-a", "--all", "show_all", is_flag=True, help="Include finished jobs.")
@click.option("--json", "as_json", is_flag=True)
def queue(
    state_dir: Path | None,
    user: str | None,
    name: str | None,
    partition: str | None,
    states: str | None,
    show_all: bool,
    as_json: bool,
) -> None:
    """List jobs (as squeue)."""
    client = _client(state_dir)
    if states is None and not show_all:
        states = UNFINISHED
    try:
        jobs = client.jobs(state=states, user=user, name=name, partition=partition)
    except OrchestratorError as e:
        raise _fail(e) from e
    if as_json:
        click.echo(json.dumps(jobs))
        return
    click.echo(_queue_table(jobs), nl=False)


QUEUE_COLUMNS = ("JOBID", "NAME", "USER", "STATE", "TIME", "NODES", "NODELIST(REASON)")
"""``orch queue``'s columns, squeue's."""

_RIGHT_ALIGNED = frozenset({"JOBID", "TIME", "NODES"})


def _queue_table(jobs: list[dict[str, Any]]) -> str:
    """``orch queue``'s table as squeue prints it: plain text, a header and one line per job,
    the columns aligned (numbers to the right), no trailing spaces; the header alone for none.

    Plain text rather than a rich table: rich's import is about 35 ms, half the command's time
    (issue 17), and a job's name is shown as given, not read as rich markup.
    """
    rows = [QUEUE_COLUMNS]
    for job in jobs:
        size = str(job["nodes"]) if job["nodes"] is not None else str(job["shape"])
        rows.append(
            (
                job["display_id"],
                job["name"][:24],
                job["user"],
                job["state"],
                _elapsed(job),
                size,
                job["nodelist"] or f"({job['reason']})",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(QUEUE_COLUMNS))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if column in _RIGHT_ALIGNED else cell.ljust(width)
            for column, cell, width in zip(QUEUE_COLUMNS, row, widths, strict=True)
        ]
        lines.append("  ".join(cells).rstrip() + "\n")
    return "".join(lines)


@click.command()
@state_dir_option
@click.option(
    "-S",
    "--starttime",
    default="now-1day",
    show_default=True,
    help="Jobs that ended at or after: now-N[unit], YYYY-MM-DD[THH:MM], HH:MM.",
)
@click.option("-E", "--endtime", default="now", show_default=True, help="... and at or before.")
@click.option("-u", "--user", help="Only this user's jobs.")
@click.option("-n", "--name", help="Only jobs of this name.")
@click.option("-t", "--state", "states", help="Comma list of finished states (default: all).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table")
def history(
    state_dir: Path | None,
    starttime: str,
    endtime: str,
    user: str | None,
    name: str | None,
    states: str | None,
    fmt: str,
) -> None:
    """Finished jobs in a time range (as sacct): elapsed time, exit code, CPU time (user +
    system, summed over the tasks) and the largest peak memory (RSS) of a task."""
    from orchestrator.timeparse import parse_time

    now = time.time()
    try:
        after, before = parse_time(starttime, now), parse_time(endtime, now)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--starttime/--endtime") from e
    client = _client(state_dir)
    filters = {"ended_after": after, "ended_before": before, "user": user, "name": name}
    try:
        jobs = client.history(**filters, **({"state": states} if states else {}))
    except OrchestratorError as e:
        raise _fail(e) from e
    rows = [_history_row(job) for job in jobs]
    if fmt == "json":
        click.echo(json.dumps(rows))
    elif fmt == "csv":
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=list(HISTORY_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        widths = {c: max([len(c), *(len(str(r[c])) for r in rows)]) for c in HISTORY_COLUMNS}
        click.echo(" ".join(f"{c.upper():>{widths[c]}}" for c in HISTORY_COLUMNS))
        for row in rows:
            click.echo(" ".join(f"{row[c]!s:>{widths[c]}}" for c in HISTORY_COLUMNS))


HISTORY_COLUMNS = (
    "jobid",
    "name",
    "user",
    "state",
    "exitcode",
    "elapsed",
    "start",
    "end",
    "cputime",
    "maxrss",
)


def _history_row(job: dict[str, Any]) -> dict[str, Any]:
    start, end = job["start_time"], job["end_time"]
    cpu, rss = job.get("cpu_time_s"), job.get("max_rss_mb")
    return {
        "jobid": job["display_id"],
        "name": job["name"],
        "user": job["user"],
        "state": job["state"],
        "exitcode": "-" if job["exit_code"] is None else job["exit_code"],
        "elapsed": _clock(end - start) if start is not None and end is not None else "-",
        "start": _date(start),
        "end": _date(end),
        "cputime": "-" if cpu is None else _cpu_clock(cpu),
        "maxrss": "-" if rss is None else _size_mb(rss),
    }


def _cpu_clock(seconds: float) -> str:
    """CPU time as sacct's TotalCPU, to the millisecond: ``[D-]HH:MM:SS.mmm``.

    >>> _cpu_clock(0.6124), _cpu_clock(3723.5)
    ('00:00:00.612', '01:02:03.500')
    """
    millis = round(seconds * 1000)
    return f"{_clock(millis // 1000)}.{millis % 1000:03d}"


def _size_mb(mb: float) -> str:
    """A size in MB (2**20 bytes) as sacct prints MaxRSS: ``812K``, ``52.3M``, ``1.2G``.

    >>> _size_mb(0.5), _size_mb(52.34), _size_mb(1228.8), _size_mb(3 * 1024**2)
    ('512K', '52.3M', '1.2G', '3.0T')
    """
    if mb < 1:
        return f"{round(mb * 1024)}K"
    for unit in ("M", "G"):
        if mb < 1024:
            return f"{mb:.1f}{unit}"
        mb /= 1024
    return f"{mb:.1f}T"


@click.command()
@state_dir_option
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
def show(state_dir: Path | None, job_id: str, as_json: bool) -> None:
    """Show one job and its events (as scontrol show job)."""
    client = _client(state_dir)
    try:
        doc = client.job(client.resolve(job_id))
    except OrchestratorError as e:
        raise _fail(e) from e
    if as_json:
        click.echo(json.dumps(doc))
        return
    if not doc["nodelist"] and doc.get("allocations"):
        # A finished job holds no nodes any more: show where its last attempt ran.
        doc["nodelist"] = _last_nodelist(doc["allocations"])
    for key, value in doc.items():
        if key not in ("events", "allocations"):
            click.echo(f"{key:>14}: {_shown(key, value)}")
    from rich.console import Console
    from rich.table import Table

    table = Table(title="events", title_justify="left")
    for column in ("time", "from", "to", "reason"):
        table.add_column(column)
    for ev in doc["events"]:
        stamp = time.strftime("%H:%M:%S", time.localtime(ev["time"])) + f"{ev['time'] % 1:.3f}"[1:]
        table.add_row(stamp, ev["old_state"] or "-", ev["new_state"], ev["reason"])
    Console().print(table)


def _act(state_dir: Path | None, job_ids: tuple[str, ...], action: str) -> None:
    client = _client(state_dir, changes=True)
    failed = False
    for text in job_ids:
        try:
            state = client.action(client.resolve(text), action)
            click.echo(f"{text}: {state}")
        except OrchestratorError as e:
            click.echo(f"{text}: {_fail(e).message}", err=True)
            failed = True
    if failed:
        sys.exit(1)


@click.command()
@state_dir_option
@click.option("-u", "--user", help="Cancel this user's jobs (with the other filters).")
@click.option("-n", "--name", help="Cancel the jobs of this name.")
@click.option("-p", "--partition", help="Cancel the jobs of this partition.")
@click.option("-t", "--state", "states", help="Cancel jobs in these states (comma list).")
@click.argument("job_ids", nargs=-1)
def cancel(
    state_dir: Path | None,
    user: str | None,
    name: str | None,
    partition: str | None,
    states: str | None,
    job_ids: tuple[str, ...],
) -> None:
    """Cancel jobs (as scancel): the JOB_IDS, or every job the filters match (among the JOB_IDS
    when both are given)."""
    if user is None and name is None and partition is None and states is None:
        if not job_ids:
            raise click.UsageError(
                "give job ids, or a filter: -u USER, -n NAME, -p PARTITION or -t STATE"
            )
        _act(state_dir, job_ids, "cancel")
        return
    client = _client(state_dir)
    try:
        jobs = client.jobs(state=states or UNFINISHED, user=user, name=name, partition=partition)
    except OrchestratorError as e:
        raise _fail(e) from e
    chosen = [j["display_id"] for j in jobs if not job_ids or j["display_id"] in job_ids]
    if not chosen:
        click.echo("no job matches", err=True)
        return
    _act(state_dir, tuple(chosen), "cancel")


@click.command()
@state_dir_option
@click.argument("job_ids", nargs=-1, required=True)
def hold(state_dir: Path | None, job_ids: tuple[str, ...]) -> None:
    """Hold pending jobs (as scontrol hold)."""
    _act(state_dir, job_ids, "hold")


@click.command()
@state_dir_option
@click.argument("job_ids", nargs=-1, required=True)
def release(state_dir: Path | None, job_ids: tuple[str, ...]) -> None:
    """Release held jobs (as scontrol release)."""
    _act(state_dir, job_ids, "release")


@click.command()
@state_dir_option
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing until the job ends.")
@click.option("--stderr", "use_stderr", is_flag=True, help="The job's stderr instead.")
def logs(state_dir: Path | None, job_id: str, follow: bool, use_stderr: bool) -> None:
    """Print a job's output."""
    client = _client(state_dir)
    stream = "stderr" if use_stderr else "stdout"
    offset = 0
    try:
        job = client.resolve(job_id)
        while True:
            chunk = client.output(job, stream, offset)
            if chunk["data"]:
                click.echo(chunk["data"], nl=False)
                offset = chunk["offset"]
                continue
            if not follow or chunk["finished"]:
                return
            time.sleep(0.2)
    except OrchestratorError as e:
        raise _fail(e) from e


@click.command()
@state_dir_option
@click.option("--json", "as_json", is_flag=True)
@click.option("--all", "draw_all", is_flag=True, help="Draw every node of a big cluster too.")
def nodes(state_dir: Path | None, as_json: bool, draw_all: bool) -> None:
    """The allocation map: one character per node, per switch or torus slice (a summary per
    plane or switch past 1,024 nodes)."""
    from orchestrator.daemon.api_documents import MAP_NODES, text_map, text_summary

    client = _client(state_dir)
    try:
        doc = client.nodes()
    except OrchestratorError as e:
        raise _fail(e) from e
    if as_json:
        click.echo(json.dumps(doc))
    elif doc["size"] > MAP_NODES and not draw_all:
        click.echo(text_summary(doc))
    else:
        click.echo(text_map(doc))
