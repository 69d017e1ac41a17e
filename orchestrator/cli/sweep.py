"""``orch sweep list|status|wait|dashboard``: follow a multirun submitted through
``hydra/launcher=orch``.

The launcher writes a manifest per sweep: ``<state dir>/sweeps/<sweep id>.json`` (where its
scheduler is, its MLflow parent run) and ``<sweep id>.jobs.jsonl``, a line per job appended as
it is submitted (id, overrides, result folder); these commands read them and ask the scheduler
how each job stands: the daemon over its API, or the store of an embedded scheduler. A sweep
submitted with ``hydra.launcher.detach=true`` is followed this way after the terminal that
started it is gone. A sweep of ``hydra/sweeper=orch_optuna`` also names its Optuna study and
storage there: ``status`` then shows each trial's parameters, value and pruning step and ends
with the best trial, and ``dashboard`` serves the study in optuna-dashboard.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator.daemon.client import DaemonClient, default_state_dir
from orchestrator.exceptions import InvalidRequestError, OrchestratorError
from orchestrator.scheduling.job import FINISHED_VALUES

if TYPE_CHECKING:
    import optuna

__all__ = ["dashboard_argv", "job_states", "read_manifest", "sweep", "trial_rows"]

state_dir_option = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="ORCH_STATE_DIR",
    default=None,
    help="Where the sweep's scheduler keeps its state (default: $ORCH_STATE_DIR or ~/.orch); "
    "for an embedded sweep, <sweep dir>/.orch_launcher/orch.",
)


def read_manifest(sweep_id: str, state_dir: Path) -> dict[str, Any]:
    """The manifest of sweep ``sweep_id`` under ``state_dir/sweeps``.

    Raises:
        InvalidRequestError: no such sweep there (names ``sweep_id``, lists recent ones).
    """
    path = state_dir / "sweeps" / f"{sweep_id}.json"
    if not path.exists():
        known = [p.stem for p in sorted((state_dir / "sweeps").glob("*.json"))]
        raise InvalidRequestError(
            "sweep_id",
            sweep_id,
            f"no sweep of that id under {state_dir} (known: {', '.join(known[-5:]) or 'none'})",
            known[-1] if known else "3f2a9c1d",
        )
    return _load_manifest(path)


def _load_manifest(path: Path) -> dict[str, Any]:
    """A manifest's header with its ``jobs`` read from the job lines beside it (manifests of
    earlier versions hold the list inline)."""
    data: dict[str, Any] = json.loads(path.read_text())
    jobs_file = data.get("jobs_file")
    if jobs_file is not None:
        data["jobs"] = []
        try:
            text = (path.parent / str(jobs_file)).read_text()
        except FileNotFoundError:  # the header is written before the first job's line
            text = ""
        for line in text.splitlines():
            try:
                data["jobs"].append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a crash mid-write: the job is lost
                continue  # to the manifest, not to the scheduler
    return data


def job_states(manifest: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """Per job id of the sweep: ``state``, ``reason``, ``exit_code`` as the scheduler has them,
    and ``nodes``, the nodes of its latest attempt (empty before it starts)."""
    ids = [int(j["job_id"]) for j in manifest["jobs"]]
    out: dict[int, dict[str, Any]] = {}
    if manifest["mode"] == "daemon":
        client = DaemonClient.from_state_dir(Path(manifest["state_dir"]))
        try:
            for job_id in ids:
                doc = client.job(job_id)
                out[job_id] = {k: doc[k] for k in ("state", "reason", "exit_code")}
                out[job_id]["nodes"] = _latest_nodes(
                    [(a["attempt"], a["node"]) for a in doc.get("allocations") or []]
                )
        finally:
            client.close()
        return out
    from orchestrator.store import Store, sqlite_url

    store = Store(sqlite_url(Path(manifest["state_dir"]) / "orch.db"))
    try:
        for job_id in ids:
            row = store.get_job(job_id)
            out[job_id] = {k: row[k] for k in ("state", "reason", "exit_code")}
            out[job_id]["nodes"] = _latest_nodes(
                [(a["attempt"], a["node_name"]) for a in store.allocation_history(job_id)]
            )
    finally:
        store.close()
    return out


def _latest_nodes(allocations: Sequence[tuple[int, str]]) -> list[str]:
    if not allocations:
        return []
    last = max(attempt for attempt, _ in allocations)
    return [str(node) for attempt, node in allocations if attempt == last]


def _result(folder: str) -> str:
    path = Path(folder) / "result.pkl"
    if not path.exists():
        return "-"
    try:
        with open(path, "rb") as f:
            ret = pickle.load(f)
    except Exception as e:  # unpickling needs the app's modules: say why, keep going
        return f"(unreadable: {type(e).__name__})"
    value = getattr(ret, "_return_value", None)
    status = getattr(getattr(ret, "status", None), "name", "")
    return f"{value!r}" if status == "COMPLETED" else f"{status}: {value}"


def _load_study(manifest: Mapping[str, Any]) -> optuna.Study | None:
    """The Optuna study a sweeper drove (None: not an ``orch_optuna`` sweep, or none yet)."""
    if not manifest.get("storage") or not manifest.get("study"):
        return None
    import optuna

    from orchestrator.trial import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(
            study_name=str(manifest["study"]), storage=open_storage(str(manifest["storage"]))
        )
    except KeyError:  # the study is not (yet) in the storage
        return None


def _override_params(overrides: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for o in overrides:
        key, sep, value = o.partition("=")
        if sep and not key.startswith("hydra."):
            out[key.lstrip("+~")] = value
    return out


def _returned(folder: str) -> list[float] | None:
    """The numbers a completed job returned (None: no result, or not numbers)."""
    path = Path(folder) / "result.pkl"
    try:
        with open(path, "rb") as f:
            ret = pickle.load(f)
    except Exception:  # absent, or unpickling needs the app's modules
        return None
    if getattr(getattr(ret, "status", None), "name", "") != "COMPLETED":
        return None
    value = getattr(ret, "_return_value", None)
    items = value if isinstance(value, list | tuple) else [value]
    numbers = [float(v) for v in items if isinstance(v, int | float) and not isinstance(v, bool)]
    return numbers if len(numbers) == len(items) else None


def trial_rows(
    manifest: Mapping[str, Any],
    states: Mapping[int, Mapping[str, Any]],
    study: optuna.Study | None = None,
) -> list[dict[str, Any]]:
    """One row per job of the sweep: ``trial`` (the job index; the trial number of a study),
    ``job_id``, ``state`` (the trial's once it has ended in the study, else the scheduler's),
    ``params``, ``values``, ``pruned_at_step`` and ``nodes``."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)} if study else {}
    rows = []
    for job in manifest["jobs"]:
        st = states.get(int(job["job_id"]), {})
        state = str(st.get("state", "?"))
        trial = trials.get(int(job["idx"]))
        row: dict[str, Any] = {
            "trial": int(job["idx"]),
            "job_id": int(job["job_id"]),
            "state": state,
            "params": _override_params(job["overrides"]),
            "values": None,
            "pruned_at_step": None,
            "nodes": list(st.get("nodes") or []),
        }
        if trial is not None:
            row["params"] = dict(trial.params)
            if trial.state.is_finished():
                row["state"] = trial.state.name
            if trial.values is not None:
                row["values"] = list(trial.values)
            if trial.state.name == "PRUNED" and trial.intermediate_values:
                row["pruned_at_step"] = max(trial.intermediate_values)
        elif state in FINISHED_VALUES:
            row["values"] = _returned(job["folder"])
        rows.append(row)
    return rows


def _best(study: optuna.Study | None) -> dict[str, Any] | None:
    if study is None:
        return None
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    if len(study.directions) == 1:
        best = study.best_trial
        return {"trial": best.number, "values": best.values, "params": dict(best.params)}
    return {"pareto_front": sorted(t.number for t in study.best_trials)}


def _best_line(best: Mapping[str, Any] | None, has_study: bool) -> str:
    if best is None:
        return "best trial: none yet" if has_study else "best trial: - (not an Optuna sweep)"
    if "pareto_front" in best:
        return "best trials (Pareto front): " + ", ".join(f"#{n}" for n in best["pareto_front"])
    params = " ".join(f"{k}={v}" for k, v in best["params"].items())
    return f"best trial: #{best['trial']} value {_fmt(best['values'])} {params}"


def _fmt(values: Sequence[float] | None) -> str:
    if values is None:
        return ""
    return ", ".join(f"{v:.6g}" if math.isfinite(v) else str(v) for v in values)


def sweep_ended(manifest: Mapping[str, Any], states: Mapping[int, Mapping[str, Any]]) -> bool:
    """Every job has ended and none will be submitted: the launcher said it is done (header
    ``ended``), or its process on this host is gone."""
    if not all(s["state"] in FINISHED_VALUES for s in states.values()):
        return False
    if manifest.get("ended"):
        return True
    pid = manifest.get("pid")
    if pid is None:  # a manifest of an earlier version: its jobs are all it says
        return True
    if manifest.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _trial_table(manifest: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Table:
    title = f"sweep {manifest['sweep_id']} ({manifest['mode']}: {manifest['url']})"
    if manifest.get("study"):
        title += f", study {manifest['study']}"
    table = Table(title=title)
    for column in ("trial", "job", "state", "parameters", "value", "pruned at step", "node(s)"):
        right = column in ("trial", "job", "pruned at step")
        table.add_column(column, justify="right" if right else "left")
    for row in rows:
        step = row["pruned_at_step"]
        table.add_row(
            str(row["trial"]),
            str(row["job_id"]),
            row["state"],
            " ".join(f"{k}={v}" for k, v in row["params"].items()),
            _fmt(row["values"]),
            "" if step is None else str(step),
            ",".join(row["nodes"]),
        )
    return table


def _status(manifest: Mapping[str, Any]) -> dict[str, Any]:
    states = job_states(manifest)
    study = _load_study(manifest)
    return {
        "sweep_id": manifest["sweep_id"],
        "counts": _counts(states),
        "jobs": states,
        "trials": trial_rows(manifest, states, study),
        "best": _best(study),
        "study": manifest.get("study") or None,
        "ended": sweep_ended(manifest, states),
    }


def _render(manifest: Mapping[str, Any], status: Mapping[str, Any]) -> Group:
    table = _trial_table(manifest, status["trials"])
    return Group(table, Text(_best_line(status["best"], status["study"] is not None)))


def _table(manifest: Mapping[str, Any], states: Mapping[int, Mapping[str, Any]]) -> Table:
    table = Table(title=f"sweep {manifest['sweep_id']} ({manifest['mode']}: {manifest['url']})")
    for column in ("#", "job", "state", "overrides", "result"):
        table.add_column(column, justify="right" if column in ("#", "job") else "left")
    for job in manifest["jobs"]:
        st = states.get(int(job["job_id"]), {})
        state = str(st.get("state", "?"))
        result = _result(job["folder"]) if state in FINISHED_VALUES else ""
        table.add_row(
            str(job["idx"]), str(job["job_id"]), state, " ".join(job["overrides"]), result
        )
    return table


def _counts(states: Mapping[int, Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for st in states.values():
        counts[st["state"]] = counts.get(st["state"], 0) + 1
    return counts


@click.group()
def sweep() -> None:
    """Follow sweeps launched with hydra/launcher=orch."""


@sweep.command("list")
@state_dir_option
def sweep_list(state_dir: Path | None) -> None:
    """The sweeps whose manifests lie under the state folder, newest last."""
    root = state_dir or default_state_dir()
    table = Table(title=f"sweeps under {root}")
    for column in ("sweep", "created", "jobs", "sweep dir"):
        table.add_column(column)
    manifests = [_load_manifest(p) for p in (root / "sweeps").glob("*.json")]
    for m in sorted(manifests, key=lambda m: float(m["created"])):
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(m["created"]))
        table.add_row(m["sweep_id"], created, str(len(m["jobs"])), m["sweep_dir"])
    Console().print(table)


@sweep.command("status")
@state_dir_option
@click.argument("sweep_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--watch", is_flag=True, help="Refresh the table until the sweep ends (Ctrl-C to stop)."
)
@click.option(
    "--interval", type=float, default=2.0, show_default=True, help="Seconds between refreshes."
)
def sweep_status(
    state_dir: Path | None, sweep_id: str, as_json: bool, watch: bool, interval: float
) -> None:
    """The trials of sweep SWEEP_ID: state, parameters, value, pruning step and nodes, then
    the best trial (a study's; an Optuna sweep's Pareto front)."""
    root = state_dir or default_state_dir()
    try:
        manifest = read_manifest(sweep_id, root)
        status = _status(manifest)
        if as_json:
            click.echo(json.dumps(status))
            return
        console = Console()
        if not watch:
            console.print(_render(manifest, status))
            return
        with Live(_render(manifest, status), console=console, auto_refresh=False) as live:
            while not status["ended"]:
                time.sleep(interval)
                manifest = read_manifest(sweep_id, root)  # the jobs submitted since
                status = _status(manifest)
                live.update(_render(manifest, status), refresh=True)
    except OrchestratorError as e:
        raise click.ClickException(str(e)) from e


@sweep.command("wait")
@state_dir_option
@click.argument("sweep_id")
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
@click.option("--poll", type=float, default=1.0, show_default=True, help="Seconds between polls.")
def sweep_wait(state_dir: Path | None, sweep_id: str, timeout: float | None, poll: float) -> None:
    """Wait until every job of sweep SWEEP_ID has ended; print them; exit 1 if any failed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        manifest = read_manifest(sweep_id, state_dir or default_state_dir())
        while True:
            states = job_states(manifest)
            if all(s["state"] in FINISHED_VALUES for s in states.values()):
                break
            if deadline is not None and time.monotonic() > deadline:
                raise click.ClickException(
                    f"sweep {sweep_id} not finished after {timeout:g} s: {_counts(states)}"
                )
            time.sleep(poll)
    except OrchestratorError as e:
        raise click.ClickException(str(e)) from e
    Console(width=200).print(_table(manifest, states))
    if any(s["state"] != "COMPLETED" for s in states.values()):
        raise SystemExit(1)


@sweep.command("storage-proxy")
@click.option(
    "--storage",
    required=True,
    help="The study storage the proxy serves: journal:PATH or a SQLAlchemy URL (sqlite:///ABS.db).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=13000, show_default=True)
def storage_proxy(storage: str, host: str, port: int) -> None:
    """Serve a study storage over Optuna's gRPC proxy, for nodes without a shared file system
    (sweeps then use hydra.sweeper.storage=grpc://HOST:PORT). Runs until interrupted."""
    import optuna
    import optuna.storages.journal

    backend: optuna.storages.BaseStorage
    if storage.startswith("journal:"):
        path = Path(storage.removeprefix("journal:")).expanduser().absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(path))
        )
    elif "://" in storage:
        backend = optuna.storages.RDBStorage(storage)
    else:
        raise click.BadParameter(
            "expected journal:PATH or a SQLAlchemy URL", param_hint="--storage"
        )
    click.echo(f"serving {storage} on grpc://{host}:{port}", err=True)
    optuna.storages.run_grpc_proxy_server(backend, host=host, port=port)


def dashboard_argv(storage: str, host: str, port: int) -> list[str]:
    """The ``optuna-dashboard`` command line that serves the study storage ``storage`` (as the
    sweeper names it: ``journal:PATH``, a SQLAlchemy URL).

    Raises:
        click.UsageError: a gRPC proxy (optuna-dashboard reads the storage itself).
    """
    if storage.startswith("grpc://"):
        raise click.UsageError(
            f"{storage} is a gRPC storage proxy: run optuna-dashboard where the storage behind "
            "it lives, or `orch sweep dashboard` (which reads through the proxy)"
        )
    if storage.startswith("journal:") or storage.endswith((".journal", ".log")):
        path = storage.removeprefix("journal:")
        target = [path, "--storage-class", "JournalFileStorage"]
    else:
        target = [storage]
    return ["optuna-dashboard", *target, "--host", host, "--port", str(port)]


@sweep.command("dashboard")
@state_dir_option
@click.argument("sweep_id")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to serve on (loopback)."
)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="Print the equivalent optuna-dashboard command line and exit.",
)
def sweep_dashboard(
    state_dir: Path | None, sweep_id: str, host: str, port: int, print_only: bool
) -> None:
    """Serve the Optuna study of sweep SWEEP_ID in optuna-dashboard until interrupted (prints
    its URL first). Reach it from another machine through an SSH tunnel:
    ssh -L 8080:127.0.0.1:8080 HOST."""
    try:
        manifest = read_manifest(sweep_id, state_dir or default_state_dir())
    except OrchestratorError as e:
        raise click.ClickException(str(e)) from e
    storage, name = manifest.get("storage"), manifest.get("study")
    if not storage or not name:
        raise click.ClickException(
            f"sweep {sweep_id} names no Optuna study (only hydra/sweeper=orch_optuna sweeps do)"
        )
    if print_only:
        click.echo(" ".join(dashboard_argv(str(storage), host, port)))
        return
    try:
        import optuna_dashboard  # type: ignore[import-untyped]
    except ImportError as e:
        raise click.ClickException(
            "optuna-dashboard is not installed: pip install optuna-dashboard==0.21.0"
        ) from e
    from orchestrator.trial import open_storage

    backend = open_storage(str(storage))
    try:
        study_id = backend.get_study_id_from_name(str(name))
    except KeyError as e:
        raise click.ClickException(f"no study {name!r} in {storage} yet") from e
    click.echo(
        f"study {name} of sweep {sweep_id}: http://{host}:{port}/dashboard/studies/{study_id}"
    )
    optuna_dashboard.run_server(backend, host=host, port=port)
