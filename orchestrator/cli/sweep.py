"""``orch sweep list|status|wait``: follow a multirun submitted through ``hydra/launcher=orch``.

The launcher writes a manifest per sweep: ``<state dir>/sweeps/<sweep id>.json`` (where its
scheduler is, its MLflow parent run) and ``<sweep id>.jobs.jsonl``, a line per job appended as
it is submitted (id, overrides, result folder); these commands read them and ask the scheduler
how each job stands: the daemon over its API, or the store of an embedded scheduler. A sweep
submitted with ``hydra.launcher.detach=true`` is followed this way after the terminal that
started it is gone.
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from orchestrator.daemon.client import DaemonClient, default_state_dir
from orchestrator.exceptions import InvalidRequestError, OrchestratorError
from orchestrator.scheduling.job import FINISHED_VALUES

__all__ = ["job_states", "read_manifest", "sweep"]

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
    """Per job id of the sweep: ``state``, ``reason``, ``exit_code`` as the scheduler has them."""
    ids = [int(j["job_id"]) for j in manifest["jobs"]]
    out: dict[int, dict[str, Any]] = {}
    if manifest["mode"] == "daemon":
        client = DaemonClient.from_state_dir(Path(manifest["state_dir"]))
        try:
            for job_id in ids:
                doc = client.job(job_id)
                out[job_id] = {k: doc[k] for k in ("state", "reason", "exit_code")}
        finally:
            client.close()
        return out
    from orchestrator.store import Store, sqlite_url

    store = Store(sqlite_url(Path(manifest["state_dir"]) / "orch.db"))
    try:
        for job_id in ids:
            row = store.get_job(job_id)
            out[job_id] = {k: row[k] for k in ("state", "reason", "exit_code")}
    finally:
        store.close()
    return out


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
def sweep_status(state_dir: Path | None, sweep_id: str, as_json: bool) -> None:
    """How each job of sweep SWEEP_ID stands."""
    try:
        manifest = read_manifest(sweep_id, state_dir or default_state_dir())
        states = job_states(manifest)
    except OrchestratorError as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(json.dumps({"sweep_id": sweep_id, "counts": _counts(states), "jobs": states}))
        return
    Console().print(_table(manifest, states))


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
