"""``orch daemon start|stop|status|add-user``: a module of its own, so that the job commands,
which a user runs many times a minute, do not build the daemon's two dozen options at every
start (``orch submit`` loads only :mod:`orchestrator.cli.jobs`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchestrator.cli.jobs import _client, _fail, state_dir_option
from orchestrator.daemon.client import default_state_dir
from orchestrator.daemon.state_folder import DaemonFiles
from orchestrator.exceptions import OrchestratorError

if TYPE_CHECKING:
    import subprocess

__all__ = ["daemon"]


# -- daemon -----------------------------------------------------------------------------------


@click.group()
def daemon() -> None:
    """Start, stop or inspect the scheduler daemon."""


@daemon.command("start")
@state_dir_option
@click.option("--cluster", default="local", show_default=True, help="Cluster preset or YAML.")
@click.option("--nodes", type=click.IntRange(min=1), help="A flat local cluster of N nodes.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; one that is not loopback needs --expose.",
)
@click.option(
    "--expose",
    is_flag=True,
    help="Allow a --host that is not loopback: the job list and the status page are then open "
    "to the network, output and changes need the token (sent in clear over plain HTTP).",
)
@click.option(
    "--allow-host",
    "allow_host",
    multiple=True,
    metavar="NAME",
    help="Accept this name in the Host header too (repeatable); by default only loopback "
    "names, the bound address and IP addresses (against DNS rebinding).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="0: any free port.")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Serve on this Unix socket (mode 0600) instead of TCP.",
)
@click.option("--store", "store_url", help="SQLAlchemy URL (default: SQLite in the folder).")
@click.option(
    "--order",
    default="fcfs",
    show_default=True,
    help="fcfs, sjf, f1, wfp3, unicep, multifactor, or tuned:FILE (a policy from orch tune).",
)
@click.option(
    "--backfill",
    type=click.Choice(["none", "easy", "conservative", "strict"]),
    help="Backfilling mode [default: a tuned policy's own, else easy].",
)
@click.option("--grace", type=float, default=10.0, show_default=True, help="SIGTERM->SIGKILL s.")
@click.option("--max-jobs-per-user", type=click.IntRange(min=1))
@click.option("--max-nodes-per-user", type=click.IntRange(min=1))
@click.option(
    "--on-stop", type=click.Choice(["keep", "requeue"]), default="keep", show_default=True
)
@click.option(
    "--signal-before-walltime",
    type=click.FloatRange(min=0, min_open=True),
    help="Send jobs with a walltime SIGUSR1 this many seconds before it (Slurm's --signal=USR1@N); "
    "an attempt that then exits 3 is requeued (a checkpoint). A job's own ORCH_SIGNAL=SIG@N wins.",
)
@click.option(
    "--backend",
    default="local",
    show_default=True,
    help="What runs the jobs: local, slurm, pjm or ray.",
)
@click.option(
    "--backend-opt",
    "backend_opt",
    multiple=True,
    metavar="KEY=VALUE",
    help="A backend option (repeatable), e.g. mode=pilot; see docs/backends.md.",
)
@click.option(
    "--shared-group",
    metavar="GROUP",
    help="Shared mode: this group may use the --socket (the kernel says who connects), users' "
    "own tokens (orch daemon add-user) are accepted over TCP, and each user touches only their "
    "own jobs; see docs/daemon.md.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Open API connections; past it the longest idle one is closed (503 if none is idle).",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds a connection may send nothing before it is closed.",
)
@click.option(
    "--request-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds for a request's headers and body to arrive (408 after).",
)
@click.option(
    "--max-body-bytes",
    type=click.IntRange(min=1024),
    default=8 * 1024 * 1024,
    show_default=True,
    help="Largest request body (413 beyond).",
)
@click.option(
    "--max-jobs-per-request",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Most jobs one request makes, array elements counted (413 beyond).",
)
@click.option(
    "--max-queued-jobs",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Most jobs waiting in the queue (429 with Retry-After beyond).",
)
@click.option("--foreground", is_flag=True, help="Run in this process (logs on stderr).")
def daemon_start(state_dir: Path | None, foreground: bool, **options: Any) -> None:
    """Start the daemon (in the background unless --foreground)."""
    from orchestrator.daemon.state_folder import (
        exposure_warning,
        is_loopback,
        prepare_state_dir,
        read_daemon_info,
    )

    root = (state_dir or default_state_dir()).resolve()
    from orchestrator.scheduling.tuned import resolve_order

    try:
        order, backfill = resolve_order(options["order"], options["backfill"])
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--order") from e
    options["order"], options["backfill"] = order, backfill.value
    host = options["host"]
    if options["socket_path"] is None and not is_loopback(host):
        if not options["expose"]:
            raise click.ClickException(
                f"{exposure_warning(host)}; add --expose if that is what you want"
            )
        if not foreground:  # in the foreground the daemon's log says it
            click.echo(f"warning: {exposure_warning(host)}", err=True)
    if foreground:
        _run_foreground(root, **options)
        return
    info = read_daemon_info(root)
    if info is not None:
        raise click.ClickException(f"a daemon already runs on {root}: pid {info['pid']}")
    try:
        former = prepare_state_dir(root)
    except OrchestratorError as e:
        raise click.ClickException(str(e)) from e
    if former is not None:
        click.echo(f"state folder {root} tightened from mode {former:o} to 700", err=True)
    import subprocess  # here: the job commands never start a process

    log_fd = os.open(DaemonFiles(root).log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(log_fd, "ab") as log_file:
        proc = subprocess.Popen(
            _foreground_argv(root, options),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    _wait_until_up(root, proc)


def _foreground_argv(root: Path, options: dict[str, Any]) -> list[str]:
    """The same options, for the same command in the foreground of a detached process."""
    argv = [sys.executable, "-m", "orchestrator.daemon", "--state-dir", str(root)]
    names = {"store_url": "store", "socket_path": "socket"}
    for name, value in options.items():
        flag = "--" + names.get(name, name).replace("_", "-")
        if isinstance(value, tuple):  # a repeatable option
            for item in value:
                argv += [flag, str(item)]
        elif isinstance(value, bool):
            argv += [flag] if value else []
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def _wait_until_up(root: Path, proc: subprocess.Popen[bytes]) -> None:
    """Until the detached daemon has written its info file (its URL printed), or exited."""
    from orchestrator.daemon.state_folder import read_daemon_info

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = read_daemon_info(root)
        if info is not None and info["pid"] == proc.pid:
            click.echo(f"daemon {proc.pid} on {info['url']} (state {root})")
            return
        if proc.poll() is not None:
            tail = (root / "daemon.log").read_text()[-2000:]
            raise click.ClickException(f"the daemon exited with {proc.returncode}:\n{tail}")
        time.sleep(0.05)
    raise click.ClickException(f"the daemon did not come up within 60 s; see {root}/daemon.log")


def _run_foreground(
    root: Path,
    *,
    cluster: str,
    nodes: int | None,
    host: str,
    expose: bool,
    allow_host: tuple[str, ...],
    port: int,
    socket_path: Path | None,
    store_url: str | None,
    order: str,
    backfill: str | None,
    grace: float,
    max_jobs_per_user: int | None,
    max_nodes_per_user: int | None,
    on_stop: str,
    signal_before_walltime: float | None,
    backend: str,
    backend_opt: tuple[str, ...],
    shared_group: str | None,
    max_connections: int,
    idle_timeout: float,
    request_timeout: float,
    max_body_bytes: int,
    max_jobs_per_request: int,
    max_queued_jobs: int,
) -> None:
    import logging

    from orchestrator.backends import parse_backend_options
    from orchestrator.daemon.api import ApiLimits
    from orchestrator.daemon.server import serve
    from orchestrator.daemon.service import DaemonConfig
    from orchestrator.resources.cluster import Cluster, load_cluster
    from orchestrator.resources.topology import FlatTopology
    from orchestrator.scheduling.policies import Backfill

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        pool = load_cluster(cluster)
        if nodes is not None:
            pool = Cluster(
                f"{pool.name}{nodes}",
                FlatTopology(nodes),
                pool.node,
                shared=pool.shared,
                resource_types=pool.resource_types,
            )
        config = DaemonConfig(
            order=order,
            backfill=Backfill(backfill or "easy"),
            grace_s=grace,
            max_jobs_per_user=max_jobs_per_user,
            max_nodes_per_user=max_nodes_per_user,
            on_stop=on_stop,
            signal_before_walltime_s=signal_before_walltime,
        )
        serve(
            root,
            pool,
            store_url=store_url,
            host=host,
            expose=expose,
            allowed_hosts=allow_host,
            port=port,
            socket_path=socket_path.resolve() if socket_path is not None else None,
            config=config,
            backend=backend,
            backend_options=parse_backend_options(backend_opt),
            shared_group=shared_group,
            limits=ApiLimits(
                max_body_bytes=max_body_bytes,
                max_jobs_per_request=max_jobs_per_request,
                max_queued_jobs=max_queued_jobs,
                max_connections=max_connections,
                idle_timeout_s=idle_timeout,
                request_timeout_s=request_timeout,
            ),
        )
    except (OrchestratorError, ValueError) as e:
        raise click.ClickException(str(e)) from e


@daemon.command("stop")
@state_dir_option
@click.option("--timeout", type=float, default=60.0, show_default=True)
def daemon_stop(state_dir: Path | None, timeout: float) -> None:
    """Stop the daemon gracefully (SIGTERM); running jobs keep running unless it was started
    with --on-stop requeue."""
    from orchestrator.daemon.state_folder import read_daemon_info

    root = state_dir or default_state_dir()
    info = read_daemon_info(root)
    if info is None:
        raise click.ClickException(f"no daemon runs on {root}")
    import signal

    pid = int(info["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while read_daemon_info(root) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    if read_daemon_info(root) is not None:
        raise click.ClickException(f"daemon {pid} still runs after {timeout} s")
    click.echo(f"daemon {pid} stopped")


@daemon.command("add-user")
@state_dir_option
@click.argument("name")
def add_user(state_dir: Path | None, name: str) -> None:
    """Give NAME a token of their own for a shared daemon (--shared-group) and print it.

    Hand it to NAME privately; they set ORCH_URL and ORCH_TOKEN. Only its digest is kept (file
    'users' in the state folder); running this again replaces NAME's token.
    """
    from orchestrator.daemon.access import add_user_token

    root = state_dir or default_state_dir()
    if not root.is_dir():
        raise click.ClickException(f"{root} is not a daemon's state folder")
    try:
        click.echo(add_user_token(DaemonFiles(root).users, name))
    except OrchestratorError as e:
        raise click.ClickException(str(e)) from e


@daemon.command("status")
@state_dir_option
def daemon_status(state_dir: Path | None) -> None:
    """Is a daemon running; where; how busy."""
    client = _client(state_dir)
    try:
        health = client.health()
        nodes = client.nodes()
    except OrchestratorError as e:
        raise _fail(e) from e
    click.echo(
        f"daemon {health['pid']}: cluster {health['cluster']}, "
        f"{nodes['allocated']}/{nodes['size']} nodes allocated, store {health['store']}, "
        f"up {health['uptime_s']:.0f} s"
    )
    # On a line of its own, nothing after it: a terminal makes it a link, a mouse copies it.
    page = client.url + "/" if client.url.startswith("http") else client.url
    click.echo(f"status page and API: {page}")
    if health.get("engine_fault"):
        click.echo(
            f"degraded: the backend's engine does not answer ({health['engine_fault']}); no job "
            "starts and none is seen to end until it does",
            err=True,
        )
    if health.get("store_fault"):
        click.echo(
            f"degraded: the job store refuses writes ({health['store_fault']}); jobs are "
            "served, changes are refused until it takes writes again",
            err=True,
        )
