"""MLflow as its users expect (issue 16): the training job follows MLflow's own conventions.

1. ``MLFLOW_TRACKING_URI`` / ``MLFLOW_EXPERIMENT_NAME`` decide where runs go when the config
   gives nothing; ``tracking.uri`` / ``tracking.experiment`` win when given.
2. Any tracking server works, remote ones included, with MLflow's credential variables: a real
   ``mlflow server --app-name basic-auth`` on loopback, reached by this machine's host name (not
   an address literal, not ``localhost``: what a lab's shared server on another host looks like
   to the client), takes a ``python -m sweeps.train`` run; wrong credentials fail clearly.
3. The child runs of a sweep are named by every swept value (the node count included).
4. Our experiments carry MLflow's experiment-kind tag for model training, and the link we print
   opens the MLflow UI on the training runs view (checked in headless Chromium).

The basic-auth server is this module's own, started once on the first test that needs it and
stopped by its own PID (``tests/mlflow_server_session.py``); the other server tests use the
session's ``mlflow_server``.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Run

from orchestrator.tracking import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    TrackingError,
    check_tracking_uri,
    connect,
    default_experiment_name,
    default_tracking_uri,
    experiment_url,
    start_or_resume_run,
    trial_run_name,
)
from sweeps.config import compose
from sweeps.train import main
from tests.mlflow_server_session import running_mlflow_server

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"

#: The smallest training job: two steps of a tiny MLP on digits, one thread.
TINY = [
    "model.hidden=[8]", "batch_size=32", "max_steps=2", "epochs=1", "num_threads=1",
    "device=cpu", "log_every_steps=1",
]  # fmt: skip

#: MLflow's variables for where and as whom runs are logged: cleared for every test, so that a
#: developer's own never leak in (the tests set them where they mean to).
MLFLOW_VARS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)


@pytest.fixture(autouse=True)
def _no_mlflow_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in MLFLOW_VARS:
        monkeypatch.delenv(var, raising=False)
    # No ~/.mlflow/credentials of the developer's: MLflow reads it when the variables are unset.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _experiment_runs(client: MlflowClient, experiment: str) -> list[Run]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    return list(client.search_runs([found.experiment_id]))


# --- 1. Where runs go ---------------------------------------------------------------------------


@pytest.mark.slow  # two training jobs, each on a fresh SQLite store (its tables made: seconds)
def test_mlflow_variables_decide_where_runs_go_unless_the_config_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    env_db, cfg_db = tmp_path / "env.db", tmp_path / "cfg.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{env_db}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from-env")

    # No setting: MLflow's variables decide, and nothing is written into the working folder.
    first = main(compose(TINY))
    assert not (work / "mlflow.db").exists()
    assert default_tracking_uri() == f"sqlite:///{env_db}"
    assert default_experiment_name() == "from-env"
    client = MlflowClient(f"sqlite:///{env_db}")
    assert [r.info.run_id for r in _experiment_runs(client, "from-env")] == [first["run_id"]]

    # An explicit setting wins over the variables.
    second = main(
        compose([*TINY, f"tracking.uri=sqlite:///{cfg_db}", "tracking.experiment=from-config"])
    )
    client = MlflowClient(f"sqlite:///{cfg_db}")
    assert [r.info.run_id for r in _experiment_runs(client, "from-config")] == [second["run_id"]]
    assert client.get_experiment_by_name("from-env") is None

    # Neither: ./mlflow.db in the working folder, experiment "train" (as before).
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    assert default_tracking_uri() == f"sqlite:///{work.resolve() / 'mlflow.db'}"
    assert default_experiment_name() == "train"


def test_a_malformed_mlflow_tracking_uri_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://:5000")
    with pytest.raises(TrackingError, match=r"invalid MLFLOW_TRACKING_URI='http://:5000'"):
        main(compose(TINY))
    assert not (tmp_path / "mlflow.db").exists()


# --- 2. Any server ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "http://mlflow.lab.example:5000",  # a lab's shared server on another host
        "https://mlflow.lab.example/some/prefix",
        "http://10.1.2.3:5000",
        "http://[2001:db8::1]:5000",
        "http://127.0.0.1:5000",
        "http://localhost:5000",
        "postgresql://mlflow@db.lab.example/mlflow",
        "mysql+pymysql://mlflow@db.lab.example:3306/mlflow",
        "databricks",
        "databricks://my-profile",
        "sqlite:///relative/mlflow.db",
        "sqlite:////abs/mlflow.db",
    ],
)
def test_any_tracking_server_is_accepted(uri: str) -> None:
    assert check_tracking_uri(uri) == uri


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "http://",
        "http://:5000",
        "https:///no/host",
        "http://mlflow.lab.example:port",
        "http://mlflow.lab.example:99999",
        "http://mlf low.lab.example:5000",
        " http://mlflow.lab.example:5000",
        "mlflow.lab.example:5000",
        "ftp://mlflow.lab.example/x",
        "file:///tmp/mlruns",
        "/tmp/mlruns",
        "sqlite://relative.db",
        "postgresql://",
    ],
)
def test_a_malformed_uri_is_refused_naming_the_field(uri: str) -> None:
    with pytest.raises(TrackingError, match=r"^invalid tracking\.uri=") as caught:
        check_tracking_uri(uri)
    assert caught.value.field == "tracking.uri"
    with pytest.raises(TrackingError, match=r"^invalid MLFLOW_TRACKING_URI="):
        check_tracking_uri(uri, field="MLFLOW_TRACKING_URI")


def test_a_password_in_a_uri_is_never_echoed() -> None:
    for uri in ("postgres://mlflow:s3cret@db.lab/mlflow", "http://u:s3cret@mlflow.lab:port"):
        with pytest.raises(TrackingError) as caught:
            check_tracking_uri(uri)
        assert "s3cret" not in str(caught.value) and ":***@" in str(caught.value)


def _local_host_name() -> str:
    """This machine's own name, when it resolves to 127.0.0.1 (the server listens there only).

    Not ``localhost`` and not an address literal: the client must resolve a name, as it does for
    a lab's server on another host. Nothing is added to /etc/hosts: a machine whose name does
    not resolve to loopback fails here with what to do.
    """
    for name in dict.fromkeys((socket.gethostname(), socket.getfqdn())):
        if not name or name == "localhost" or name.startswith("localhost."):
            continue
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
        except OSError:
            continue
        if "127.0.0.1" in addresses:
            return name
    pytest.fail(
        f"this machine's host name ({socket.gethostname()!r}) does not resolve to 127.0.0.1, "
        "where the test's MLflow server listens; map it there (e.g. `127.0.0.1 NAME` in "
        "/etc/hosts) to run the host-name tests"
    )


@dataclass(frozen=True)
class AuthServer:
    """A ``mlflow server --app-name basic-auth`` and its accounts."""

    url: str  # by host name
    admin: tuple[str, str]
    user: tuple[str, str]


def _basic_auth(user: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """MLflow's basic-auth app on loopback, answering requests addressed to this host's name.

    MLflow 3.17 ships no default admin password: the first start creates the admin from
    ``MLFLOW_AUTH_ADMIN_PASSWORD`` (12 characters at least), needs
    ``MLFLOW_FLASK_SERVER_SECRET_KEY`` for CSRF, and keeps its users in ``database_uri`` of the
    file ``MLFLOW_AUTH_CONFIG_PATH`` names (here an absolute path in this module's tmp folder;
    the packaged default, ``sqlite:///basic_auth.db``, is relative to the server's folder). Its
    DNS-rebinding guard accepts only loopback and private addresses in the Host header unless
    ``--allowed-hosts`` names more, as an admin does for a shared server's name.
    """
    folder = tmp_path_factory.mktemp("mlflow-auth")
    host = _local_host_name()
    admin = ("admin", "admin-" + uuid.uuid4().hex[:12])
    ini = folder / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{folder / 'basic_auth.db'}\n"
        f"admin_username = {admin[0]}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    server_env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
    }
    args = ("--workers", "1", "--app-name", "basic-auth", "--allowed-hosts", f"{host}:*")
    with ExitStack() as stack:
        # The server inherits these at its start; the tests run without them.
        with pytest.MonkeyPatch.context() as mp:
            for key, value in server_env.items():
                mp.setenv(key, value)
            url, _pid = stack.enter_context(
                running_mlflow_server(
                    f"sqlite:///{folder / 'mlflow.db'}",
                    folder / "artifacts",
                    folder / "server.log",
                    extra_args=args,
                    cwd=folder,
                    healthy_within_s=240,
                    stop_grace_s=20,
                )
            )
        by_name = url.replace("127.0.0.1", host)
        user = ("trainer", "trainer-" + uuid.uuid4().hex[:12])
        request = urllib.request.Request(
            f"{by_name}/api/2.0/mlflow/users/create",
            data=json.dumps({"username": user[0], "password": user[1]}).encode(),
            headers={"Authorization": _basic_auth(admin), "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
        yield AuthServer(by_name, admin, user)


def _admin_client(server: AuthServer, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.admin[1])
    return MlflowClient(server.url)


@pytest.mark.service
def test_a_training_job_logs_to_a_server_by_host_name_with_mlflow_credentials(
    auth_server: AuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment = _unique("lab")
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_VARS}
    env |= {
        "MLFLOW_TRACKING_URI": auth_server.url,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "MLFLOW_TRACKING_USERNAME": auth_server.user[0],
        "MLFLOW_TRACKING_PASSWORD": auth_server.user[1],
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "sweeps.train", *TINY, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    # The server answers no request without a login: the job's writes went through with the
    # trainer account, the only credentials it had.
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()
    client = _admin_client(auth_server, monkeypatch)
    runs = _experiment_runs(client, experiment)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["model.hidden"] == "[8]"
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    assert found.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    # The job prints the link that opens the MLflow UI on the training runs view.
    link = experiment_url(auth_server.url, found.experiment_id, run.info.run_id)
    assert f"mlflow: {link}" in done.stdout


@pytest.mark.service
@pytest.mark.parametrize("who", ["wrong password", "no credentials"])
def test_refused_credentials_fail_with_a_clear_error(
    who: str, auth_server: AuthServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server.url)
    if who == "wrong password":
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", auth_server.user[0])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-" + auth_server.user[1])
    with pytest.raises(TrackingError) as caught:
        main(compose(TINY))
    message = str(caught.value)
    assert caught.value.field == "MLFLOW_TRACKING_USERNAME"
    assert auth_server.url in message and "401" in message
    assert "MLFLOW_TRACKING_PASSWORD" in message
    assert auth_server.user[1] not in message
    if who == "no credentials":
        assert "no credentials" in message


@pytest.mark.service
def test_a_server_that_refuses_the_host_name_or_is_no_server_says_so(mlflow_server: str) -> None:
    # The session's server runs without --allowed-hosts: MLflow's guard refuses a Host header
    # with this machine's name, as a shared server not told its own name would.
    by_name = mlflow_server.replace("127.0.0.1", _local_host_name())
    with pytest.raises(TrackingError, match=r"--allowed-hosts") as caught:
        connect(by_name)
    assert caught.value.field == "tracking.uri"
    # A URI where something else answers (here a path prefix the server does not have).
    with pytest.raises(TrackingError, match=r"no MLflow tracking server answers there"):
        connect(f"{mlflow_server}/no-such-prefix", field="MLFLOW_TRACKING_URI")


# --- 3. Names of a sweep's runs ----------------------------------------------------------------


def test_trial_names_carry_every_override_in_a_stable_short_form() -> None:
    one = trial_run_name(["nodes=2", "optimizer=kfac", "optimizer.lr=0.012345678912", "seed=0"])
    assert one == "lr=0.0123457,nodes=2,optimizer=kfac,seed=0"
    # Stable: the order of the overrides does not matter.
    assert trial_run_name(["seed=0", "optimizer.lr=0.012345678912", "optimizer=kfac", "nodes=2"])
    assert trial_run_name(["nodes=1", "batch_size=64"]) != trial_run_name(
        ["nodes=2", "batch_size=64"]
    )
    # A last key part that two overrides share keeps its full key.
    assert trial_run_name(["model.width=8", "data.width=4"]) == "data.width=4,model.width=8"
    # How the job runs and reports is not what the trial is.
    assert (
        trial_run_name(
            [
                "experiment=kfac_vs_sgd", "tracking.uri=sqlite:////x.db", "checkpoint.path=/c",
                "+run_name=x", "batch_size=64",
            ]
        )
        == "batch_size=64"
    )  # fmt: skip
    assert trial_run_name(["tracking.experiment=x"]) is None
    assert trial_run_name(["+extra=1", "~model.skip"]) == "extra=1,~skip"
    long = trial_run_name([f"k{i}=" + "v" * 40 for i in range(20)])
    assert long is not None and len(long) <= 250
    assert long != trial_run_name([f"k{i}=" + "v" * 40 for i in range(19)] + ["k19=w"])


@pytest.mark.service
def test_a_sweep_names_its_runs_by_every_swept_value(mlflow_server: str, tmp_path: Path) -> None:
    experiment = _unique("names")
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_VARS}
    done = subprocess.run(
        [
            sys.executable, "-m", "sweeps.train", "-m", *TINY, "+nodes=1,2",
            "optimizer.lr=0.1,0.05", f"tracking.uri={mlflow_server}",
            f"tracking.experiment={experiment}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path, env=env | {"OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=400, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    runs = _experiment_runs(MlflowClient(mlflow_server), experiment)
    names = sorted(r.info.run_name for r in runs)
    # Every override of the trial, the fixed ones too (a job cannot tell them apart), sorted.
    # (`nodes` is in the schema, not in conf/config.yaml: `+nodes`, as `experiment=kfac_vs_sgd`
    # would set it.)
    fixed = "batch_size=32,device=cpu,epochs=1,hidden=[8],log_every_steps=1"
    assert names == [
        f"{fixed},lr=0.05,max_steps=2,nodes=1,num_threads=1",
        f"{fixed},lr=0.05,max_steps=2,nodes=2,num_threads=1",
        f"{fixed},lr=0.1,max_steps=2,nodes=1,num_threads=1",
        f"{fixed},lr=0.1,max_steps=2,nodes=2,num_threads=1",
    ]


# --- 4. The MLflow UI's view of our experiments ------------------------------------------------


def test_experiments_we_create_or_use_are_marked_model_training(tmp_path: Path) -> None:
    client = connect(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = start_or_resume_run(client, "made-here", "r", {})
    made = client.get_experiment_by_name("made-here")
    assert made is not None and made.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    # An experiment made elsewhere, untagged: marked when a job logs into it.
    other = client.create_experiment("made-elsewhere")
    start_or_resume_run(client, "made-elsewhere", "r", {})
    assert client.get_experiment(other).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    # ... and when a resumed job reopens a run of it.
    old = client.create_experiment("resumed-into")
    old_run = client.create_run(old).info.run_id
    assert start_or_resume_run(client, "ignored", "r", {}, run_id=old_run) == old_run
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    # A kind a user chose in the UI is theirs: left alone.
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    start_or_resume_run(client, "chosen", "r", {})
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"
    assert client.get_run(run_id).info.experiment_id == made.experiment_id


def test_experiment_links_open_the_training_runs_view() -> None:
    assert (
        experiment_url("http://mlflow.lab.example:5000/", "7")
        == "http://mlflow.lab.example:5000/#/experiments/7/runs?workflowType=machine_learning"
    )
    assert (
        experiment_url("https://u:pw@mlflow.lab.example/prefix", "7", "abc")
        == "https://mlflow.lab.example/prefix/#/experiments/7/runs/abc"
        "?workflowType=machine_learning"
    )
    assert experiment_url("sqlite:////x/mlflow.db", "7") is None


@pytest.mark.service
def test_the_experiment_page_opens_on_the_training_runs_view(
    mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.reports.webdriver_lite import Browser

    monkeypatch.chdir(tmp_path)
    experiment = _unique("ui")
    result = main(
        compose([*TINY, f"tracking.uri={mlflow_server}", f"tracking.experiment={experiment}"])
    )
    client = MlflowClient(mlflow_server)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    assert found.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    run_name = client.get_run(str(result["run_id"])).info.run_name
    link = experiment_url(mlflow_server, found.experiment_id)
    assert link is not None
    ARTIFACTS.mkdir(exist_ok=True)
    with Browser(tmp_path / "profile") as page:
        page.get(link)
        page.wait_for(f"return document.body.innerText.includes({run_name!r})")
        where = page.script("return location.hash")
        text = page.script("return document.body.innerText")
        shot = ARTIFACTS / "mlflow-experiment.png"
        page.screenshot(shot)
    # The runs table of the model-training view: its side navigation (Runs, Models, Model
    # registry), not the GenAI one (Overview, Evaluation runs, Prompts & versions, Judges).
    assert where.startswith(f"#/experiments/{found.experiment_id}/runs")
    assert "workflowType=machine_learning" in where
    lines = {line.strip() for line in text.splitlines()}
    assert {"Runs", "Models", "Model registry", run_name} <= lines
    assert not {"Evaluation runs", "Prompts & versions", "Judges", "Overview"} & lines
    assert shot.stat().st_size > 20_000
