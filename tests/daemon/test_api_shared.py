"""Who is asking (issue 13): single-owner mode files every job under the owner; shared mode
takes the caller from the kernel on the Unix socket (``SO_PEERCRED``) or from a user's own token
over TCP, and lets a user touch their own jobs only.

The other users are real: requests are sent by processes running as ``nobody`` (in group
``nogroup``) and as ``daemon`` (not in it), with Debian's own Python (the project's venv lies
under /root, which they cannot enter). Needs root, as CI has.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from daemon_helpers import DaemonProcess, start_daemon, stop_daemon

from orchestrator.cli import main
from orchestrator.daemon.spec import JobSpec, login_name

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs requests as other users (root)")

SYSTEM_PYTHON = "/usr/bin/python3"
NOBODY = pwd.getpwnam("nobody")
OUTSIDER = pwd.getpwnam("daemon")  # not in nogroup
HELD = {"argv": ["true"], "nodes": 1, "hold": True}

# Standard library only: run by Debian's Python as another user.
_REQUEST = r"""
import http.client, json, socket, sys
target, method, path, body, token = json.loads(sys.argv[1])
class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(target)
try:
    conn = Conn("localhost", timeout=30) if target.startswith("/") else \
        http.client.HTTPConnection(target, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    conn.request(method, path, None if body is None else json.dumps(body), headers)
    response = conn.getresponse()
    print(json.dumps([response.status, json.loads(response.read())]))
except OSError as e:
    print(json.dumps([0, {"errno": e.errno}]))
"""


def as_user(
    user: pwd.struct_passwd,
    target: str,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """One request sent by a process of ``user`` to a socket path or ``host:port``."""
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", _REQUEST, json.dumps([target, method, path, body, token])],
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        check=True,
    )
    status, doc = json.loads(done.stdout)
    return status, doc


@pytest.fixture(scope="module")
def socket_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="orch-shared-"))
    os.chmod(folder, 0o755)  # others may reach the socket; its own mode decides who connects
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def shared_socket(
    tmp_path_factory: pytest.TempPathFactory, socket_folder: Path
) -> Iterator[tuple[DaemonProcess, str]]:
    path = socket_folder / "api.sock"
    daemon = start_daemon(
        tmp_path_factory.mktemp("shared"),
        "--nodes",
        "2",
        "--socket",
        str(path),
        "--shared-group",
        "nogroup",
    )
    yield daemon, str(path)
    stop_daemon(daemon)


@pytest.fixture(scope="module")
def shared_tcp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    daemon = start_daemon(
        tmp_path_factory.mktemp("shared-tcp"), "--nodes", "2", "--shared-group", "nogroup"
    )
    yield daemon
    stop_daemon(daemon)


def add_user(daemon: DaemonProcess, name: str) -> str:
    result = CliRunner().invoke(main, ["daemon", "add-user", "--state-dir", str(daemon.root), name])
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_single_owner_files_every_job_under_the_owner(shared_daemon: DaemonProcess) -> None:
    client = shared_daemon.client()
    (job,) = client.submit({**HELD, "user": "mallory"})
    assert client.job(job)["user"] == login_name() != "mallory"
    client.action(job, "cancel")


def test_a_job_without_user_is_filed_under_the_login_name() -> None:
    """Hydra's launcher (embedded daemon) and the Python API build specs without a user: they
    were all filed under the placeholder 'user', so fair share had nothing real to work on."""
    spec = JobSpec.from_mapping({"argv": ["true"], "nodes": 1})
    assert spec.request.user == pwd.getpwuid(os.getuid()).pw_name == login_name()


def test_single_owner_accepts_no_user_token(shared_daemon: DaemonProcess) -> None:
    token = add_user(shared_daemon, "alice")
    host = shared_daemon.url.removeprefix("http://")
    status, doc = as_user(NOBODY, host, "POST", "/api/v1/jobs", HELD, token)
    assert status == 401 and doc["error"]["field"] == "Authorization", doc


def test_shared_socket_is_open_to_the_group_only(shared_socket: tuple[DaemonProcess, str]) -> None:
    _, path = shared_socket
    info = os.stat(path)
    assert stat.S_IMODE(info.st_mode) == 0o660 and info.st_gid == NOBODY.pw_gid
    status, doc = as_user(OUTSIDER, path, "GET", "/api/v1/health")
    assert status == 0 and doc["errno"] == 13  # EACCES: the kernel refuses the connection


def test_shared_socket_users_touch_their_own_jobs_only(
    shared_socket: tuple[DaemonProcess, str],
) -> None:
    daemon, path = shared_socket
    client = daemon.client()
    (owners,) = client.submit(HELD)
    # No token: the kernel says who connected; the user field cannot say otherwise.
    status, doc = as_user(NOBODY, path, "POST", "/api/v1/jobs", {**HELD, "user": "root"})
    assert status == 201, doc
    (theirs,) = doc["job_ids"]
    assert client.job(theirs)["user"] == "nobody"
    assert client.job(owners)["user"] == login_name()
    for action in ("cancel", "hold", "release"):
        status, doc = as_user(NOBODY, path, "POST", f"/api/v1/jobs/{owners}/{action}")
        assert status == 403 and doc["error"]["field"] == "job_id", doc
    status, doc = as_user(NOBODY, path, "GET", f"/api/v1/jobs/{owners}/output")
    assert status == 403, doc
    assert client.job(owners)["state"] == "HELD"
    status, doc = as_user(NOBODY, path, "GET", f"/api/v1/jobs/{theirs}/output")
    assert status == 200 and doc["state"] == "HELD", doc
    status, doc = as_user(NOBODY, path, "POST", f"/api/v1/jobs/{theirs}/cancel")
    assert status == 200 and doc["state"] == "CANCELLED", doc
    # The owner may act on every job.
    status, doc = as_user(NOBODY, path, "POST", "/api/v1/jobs", HELD)
    assert client.action(doc["job_ids"][0], "cancel") == "CANCELLED"
    client.action(owners, "cancel")


def test_shared_tcp_users_bring_their_own_token(shared_tcp: DaemonProcess) -> None:
    client = shared_tcp.client()
    (owners,) = client.submit(HELD)
    token = add_user(shared_tcp, "alice")
    users = (shared_tcp.root / "users").read_text()
    assert token not in users and users.startswith("alice ")  # only a digest is kept
    assert stat.S_IMODE((shared_tcp.root / "users").stat().st_mode) == 0o600
    host = shared_tcp.url.removeprefix("http://")
    status, doc = as_user(NOBODY, host, "POST", "/api/v1/jobs", {**HELD, "user": "bob"}, token)
    assert status == 201, doc
    (alices,) = doc["job_ids"]
    assert client.job(alices)["user"] == "alice"
    status, doc = as_user(NOBODY, host, "POST", f"/api/v1/jobs/{owners}/cancel", None, token)
    assert status == 403, doc
    status, doc = as_user(NOBODY, host, "POST", "/api/v1/jobs", HELD, token[:-1] + "x")
    assert status == 401, doc
    # A new token replaces the old one at once, without a restart.
    renewed = add_user(shared_tcp, "alice")
    status, doc = as_user(NOBODY, host, "POST", f"/api/v1/jobs/{alices}/cancel", None, token)
    assert status == 401, doc
    status, doc = as_user(NOBODY, host, "POST", f"/api/v1/jobs/{alices}/cancel", None, renewed)
    assert status == 200 and doc["state"] == "CANCELLED", doc
    client.action(owners, "cancel")


def test_orch_talks_to_a_shared_daemon_from_the_environment(
    shared_tcp: DaemonProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = add_user(shared_tcp, "carol")
    monkeypatch.setenv("ORCH_URL", shared_tcp.url)
    monkeypatch.setenv("ORCH_TOKEN", token)
    monkeypatch.delenv("ORCH_STATE_DIR", raising=False)
    result = CliRunner().invoke(main, ["submit", "--parsable", "-N", "1", "-H", "--", "true"])
    assert result.exit_code == 0, result.output
    job = int(result.output.strip())
    assert shared_tcp.client().job(job)["user"] == "carol"
    result = CliRunner().invoke(main, ["cancel", str(job)])
    assert result.exit_code == 0, result.output


def test_unknown_shared_group_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no such group"):
        start_daemon(tmp_path, "--nodes", "1", "--shared-group", "no-such-group-here")


def test_http_client_has_no_peer_on_tcp(shared_tcp: DaemonProcess) -> None:
    """Over TCP there is no kernel word: no token, no change (even in shared mode)."""
    host, port = shared_tcp.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", "/api/v1/jobs", json.dumps(HELD), {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 401
    conn.close()
