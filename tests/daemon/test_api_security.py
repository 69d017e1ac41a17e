"""Issue 13: the daemon's security holes, each pinned at the HTTP level (status, headers, JSON
body), so the tests hold for any server behind the same API.

- job output needs the token and is never read through a link, a hard link or a FIFO;
- the state folder is made or tightened to 0700 and the daemon's files are 0600; a folder of
  someone else's, or one others may write, is refused;
- hostile numbers, digits and bytes get a 4xx naming the field, never a 500;
- an idempotency key reused with another request is a 409, not the first request's ids;
- only the daemon's own names in ``Host`` (DNS rebinding); a non-loopback bind needs --expose.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import stat
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from daemon_helpers import DaemonProcess, start_daemon, stop_daemon

from orchestrator.daemon.client import DaemonClient
from orchestrator.daemon.state_folder import read_daemon_info

PY = sys.executable
HUGE = "9" * 5000  # over Python's 4,300-digit limit of int(str)


def call(
    daemon: DaemonProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    token: bool = True,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """One request; the status and the decoded JSON body ({} for another body)."""
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    send = dict(headers or {})
    if token:
        send["Authorization"] = f"Bearer {daemon.token}"
    if body is not None:
        send["Content-Length"] = str(len(body))
    try:
        conn.request(method, path, body=body, headers=send)
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    return response.status, json.loads(payload) if payload.startswith(b"{") else {}


def raw_get(daemon: DaemonProcess, target: bytes) -> tuple[int, dict[str, Any]]:
    """A GET whose request line holds these exact bytes (http.client sends ASCII only)."""
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(
            b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + daemon.token.encode() + b"\r\nConnection: close\r\n\r\n"
        )
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body) if body.startswith(b"{") else {}


def run_job(client: DaemonClient, argv: list[str]) -> int:
    (job,) = client.submit({"argv": argv, "nodes": 1})
    assert client.wait(job, 30)["state"] == "COMPLETED"
    return job


# -- 1. job output: the token, and never a link ------------------------------------------------


def test_output_needs_the_token(shared_daemon: DaemonProcess, client: DaemonClient) -> None:
    job = run_job(client, ["sh", "-c", "echo private"])
    status, doc = call(shared_daemon, "GET", f"/api/v1/jobs/{job}/output", token=False)
    assert status == 401 and doc["error"]["code"] == "unauthorized", doc
    status, doc = call(shared_daemon, "GET", f"/api/v1/jobs/{job}/output")
    assert status == 200 and doc["data"] == "private\n", doc
    # The job list and the status page stay open (squeue shows the queue to everyone).
    assert call(shared_daemon, "GET", "/api/v1/status", token=False)[0] == 200
    assert call(shared_daemon, "GET", f"/api/v1/jobs/{job}", token=False)[0] == 200


@pytest.mark.parametrize(
    "replace",
    [
        "ln -s ../../token stdout",  # the exploit: a link to the daemon's token
        "ln ../../token stdout",  # a hard link: no link to refuse, the same file
        "mkfifo stdout",  # a FIFO: a reader would wait forever
    ],
)
def test_output_is_never_read_through_a_link(
    shared_daemon: DaemonProcess, client: DaemonClient, replace: str
) -> None:
    job = run_job(client, ["sh", "-c", f"rm stdout && {replace}"])
    status, doc = call(shared_daemon, "GET", f"/api/v1/jobs/{job}/output")
    assert status == 403, doc
    assert doc["error"]["code"] == "output_refused", doc
    assert "stdout" in doc["error"]["message"]
    assert shared_daemon.token not in json.dumps(doc)


def test_output_is_never_read_through_a_linked_job_folder(
    shared_daemon: DaemonProcess, client: DaemonClient
) -> None:
    secret = run_job(client, ["sh", "-c", "echo other-job-secret"])
    job = run_job(client, ["true"])
    folder = shared_daemon.root / "jobs" / str(job)
    folder.rename(folder.with_name(f"{job}.moved"))
    folder.symlink_to(folder.with_name(str(secret)))
    status, doc = call(shared_daemon, "GET", f"/api/v1/jobs/{job}/output")
    assert status == 403 and doc["error"]["code"] == "output_refused", doc
    assert "secret" not in json.dumps(doc)


# -- 2. the state folder ---------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def refused_start(root: Path) -> str:
    """The daemon's error when it refuses to start on ``root`` (one that starts is stopped)."""
    try:
        daemon = start_daemon(root, "--nodes", "1")
    except RuntimeError as e:
        return str(e)
    stop_daemon(daemon)
    pytest.fail(f"the daemon started on {root} (mode {_mode(root):o})")


@pytest.fixture(scope="module")
def open_folder_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon started on a state folder that already existed with mode 0755, that also
    accepts the host name ``orch.example``."""
    root = tmp_path_factory.mktemp("open") / "state"
    root.mkdir()
    os.chmod(root, 0o755)
    daemon = start_daemon(root, "--nodes", "1", "--allow-host", "orch.example")
    yield daemon
    stop_daemon(daemon)


def test_existing_state_folder_is_tightened_and_files_are_owner_only(
    open_folder_daemon: DaemonProcess,
) -> None:
    root = open_folder_daemon.root
    client = open_folder_daemon.client()
    job = run_job(client, ["sh", "-c", "echo hi"])
    assert _mode(root) == 0o700
    paths = ["token", "daemon.json", "daemon.lock", "daemon.log", "orch.db", "orch.db-wal"]
    paths += ["orch.db-shm", f"jobs/{job}/stdout", f"jobs/{job}/stderr"]
    for name in paths:
        assert _mode(root / name) & 0o077 == 0, f"{name}: {_mode(root / name):o}"
    for name in ("jobs", f"jobs/{job}"):
        assert _mode(root / name) & 0o077 == 0, f"{name}: {_mode(root / name):o}"


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757], ids=oct)
def test_state_folder_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    root = tmp_path / "state"
    root.mkdir()
    os.chmod(root, mode)
    error = refused_start(root)
    assert "writable by group or others" in error and f"chmod 700 {root}" in error
    assert not (root / "token").exists() and not (root / "orch.db").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder away needs root")
def test_state_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "state"
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)
    assert "owned by uid 65534" in refused_start(root)
    assert not (root / "token").exists()


# -- 3. hostile numbers, digits and bytes: 4xx naming the field ------------------------------


def _job(**fields: Any) -> dict[str, Any]:
    return {"argv": ["true"], "nodes": 1, "hold": True, **fields}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"argv": ["true"], "hold": true, "nodes": ' + HUGE + "}", "nodes"),
        ('{"argv": ["true"], "nodes": 1, "hold": true, "priority": -' + HUGE + "}", "priority"),
        ('{"argv": ["true"], "nodes": 1, "hold": true, "time": ' + "9" * 400 + "}", "time"),
        (json.dumps(_job(time=HUGE)), "time"),
        (json.dumps(_job(time="1:" + "9" * 400)), "time"),
        (json.dumps(_job(array=HUGE)), "array"),
        (json.dumps(_job(array="0-3%" + HUGE)), "array"),
        (json.dumps(_job(array="\u0663")), "array"),  # ARABIC-INDIC DIGIT THREE: int() takes it
        (json.dumps(_job(array="0-3%\u00b2")), "array"),  # SUPERSCRIPT TWO: isdigit() takes it
        (json.dumps(_job(dependency="afterok:" + HUGE)), "dependency"),
        (json.dumps(_job(dependency="afterok:\u00b2")), "dependency"),
        (json.dumps({**_job(shape=HUGE), "nodes": None}), "shape"),
        (json.dumps(_job(name="\ud800")), "name"),  # lone surrogates: fixed before, kept
        (json.dumps(_job(user="\udc00")), "user"),
    ],
)
def test_hostile_numbers_in_a_submission_name_the_field(
    shared_daemon: DaemonProcess, client: DaemonClient, body: str, field: str
) -> None:
    before = len(client.jobs())
    status, doc = call(shared_daemon, "POST", "/api/v1/jobs", body.encode())
    assert status == 422, doc
    assert doc["error"]["field"] == field and doc["error"]["example"], doc
    assert len(json.dumps(doc)) < 2000  # the error does not echo 5,000 digits
    assert len(client.jobs()) == before


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/jobs?limit=%C2%B2", "limit"),
        ("/api/v1/jobs?offset=%C2%B2", "offset"),
        ("/api/v1/jobs?array_id=%D9%A3", "array_id"),
        ("/api/v1/jobs/%FF", "job_id"),
        ("/api/v1/jobs/1/output?offset=" + "9" * 18, None),
        ("/api/v1/jobs/1/output?offset=" + HUGE, "offset"),
    ],
)
def test_hostile_query_gets_a_4xx(
    shared_daemon: DaemonProcess, client: DaemonClient, path: str, field: str | None
) -> None:
    if "/1/output" in path:
        job = run_job(client, ["sh", "-c", "echo some output"])
        path = path.replace("/1/", f"/{job}/")
    status, doc = call(shared_daemon, "GET", path)
    if field is None:  # an offset past the end: nothing more to read, yet
        assert status == 200 and doc["data"] == "", doc
    else:
        assert status == 422 and doc["error"]["field"] == field, doc


@pytest.mark.parametrize("target", [b"/api/v1/jobs/\xb2", b"/api/v1/jobs/\xff", b"/api/\xff/x"])
def test_bytes_that_are_not_utf8_in_the_path_get_a_4xx(
    shared_daemon: DaemonProcess, target: bytes
) -> None:
    status, doc = raw_get(shared_daemon, target)
    assert 400 <= status < 500, doc


# -- 5. idempotency keys ----------------------------------------------------------------------


def _submit(
    daemon: DaemonProcess, body: Any, key: str, route: str = "/api/v1/jobs"
) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode()
    return call(daemon, "POST", route, data, headers={"Idempotency-Key": key})


def test_idempotency_key_with_another_body_is_a_conflict(
    shared_daemon: DaemonProcess, client: DaemonClient
) -> None:
    key = uuid.uuid4().hex
    status, first = _submit(shared_daemon, _job(name="first"), key)
    assert status == 201, first
    # Same request again (another key order, another spacing): the same ids.
    assert _submit(shared_daemon, dict(reversed(_job(name="first").items())), key) == (201, first)
    before = len(client.jobs())
    status, doc = _submit(shared_daemon, _job(name="second"), key)
    assert status == 409, doc
    assert doc["error"]["code"] == "idempotency_key_reused", doc
    assert doc["error"]["field"] == "Idempotency-Key" and key in doc["error"]["message"]
    # The same jobs through the batch route are another request too.
    status, doc = _submit(shared_daemon, {"jobs": [_job(name="first")]}, key, "/api/v1/jobs/batch")
    assert status == 409, doc
    assert len(client.jobs()) == before
    client.action(first["job_ids"][0], "cancel")


def test_batch_idempotency_key_with_more_jobs_is_a_conflict(
    shared_daemon: DaemonProcess, client: DaemonClient
) -> None:
    key = uuid.uuid4().hex
    route = "/api/v1/jobs/batch"
    status, first = _submit(shared_daemon, {"jobs": [_job()]}, key, route)
    assert status == 201, first
    status, doc = _submit(shared_daemon, {"jobs": [_job(), _job()]}, key, route)
    assert status == 409 and doc["error"]["code"] == "idempotency_key_reused", doc  # not [[11], []]
    client.action(first["job_ids"][0][0], "cancel")


# -- 6. Host header and the bind address --------------------------------------------------------


def test_foreign_host_header_is_refused(shared_daemon: DaemonProcess) -> None:
    port = shared_daemon.url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
        status, doc = call(shared_daemon, "GET", "/api/v1/jobs", headers={"Host": host})
        assert status == 200, (host, doc)
    for host in (f"evil.example:{port}", "evil.example", f"localhost.evil.example:{port}"):
        for method, path in (("GET", "/api/v1/jobs"), ("GET", "/"), ("POST", "/api/v1/jobs")):
            body = json.dumps(_job()).encode() if method == "POST" else None
            status, doc = call(shared_daemon, method, path, body, headers={"Host": host})
            assert status == 421, (host, path, doc)
            assert doc["error"]["code"] == "misdirected" and doc["error"]["field"] == "Host"
            assert "--allow-host" in doc["error"]["message"]


def test_allowed_host_names_are_accepted(open_folder_daemon: DaemonProcess) -> None:
    port = open_folder_daemon.url.rsplit(":", 1)[1]
    ok = call(open_folder_daemon, "GET", "/api/v1/jobs", headers={"Host": f"orch.example:{port}"})
    assert ok[0] == 200, ok
    bad = call(open_folder_daemon, "GET", "/api/v1/jobs", headers={"Host": "other.example"})
    assert bad[0] == 421, bad


def test_non_loopback_bind_needs_expose(tmp_path: Path) -> None:
    from orchestrator.cli import main

    root = tmp_path / "state"
    result = CliRunner().invoke(
        main, ["daemon", "start", "--state-dir", str(root), "--host", "0.0.0.0", "--nodes", "1"]
    )
    started = read_daemon_info(root)
    if started is not None:  # the hole: it started in the background; stop it
        os.kill(int(started["pid"]), signal.SIGTERM)
    assert result.exit_code != 0
    assert "--expose" in result.output and "not a loopback address" in result.output
    assert not (root / "daemon.json").exists()
    daemon = start_daemon(root, "--nodes", "1", "--host", "0.0.0.0", "--expose")
    try:
        assert "reachable from the network" in daemon.log()
        assert daemon.client().health()["status"] == "ok"
    finally:
        stop_daemon(daemon)
