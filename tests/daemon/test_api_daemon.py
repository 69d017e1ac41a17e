"""The HTTP API of a real daemon process: submit and run, arrays and dependency chains, bad
input, authentication, shell metacharacters, metrics, OpenAPI, parallel clients, the CLI."""

from __future__ import annotations

import http.client
import json
import os
import re
import stat
import subprocess
import sys
import threading
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import DaemonProcess, orch, start_daemon, stop_daemon, wait_for

from orchestrator.daemon.client import ApiError, DaemonClient

PY = sys.executable


def raw(
    daemon: DaemonProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    token: str | None = "valid",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    host, port = daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    send = dict(headers or {})
    if token is not None:
        send["Authorization"] = f"Bearer {daemon.token if token == 'valid' else token}"
    if body is not None:
        send["Content-Length"] = str(len(body))
    conn.request(method, path, body=body, headers=send)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, json.loads(payload) if payload.startswith(b"{") else {}


def test_submit_run_complete_with_events(client: DaemonClient) -> None:
    code = "import os; os.write(1, b'hello\\n')"  # one write: two tasks append to one file
    (job,) = client.submit({"argv": [PY, "-c", code], "nodes": 2, "name": "hi"})
    doc = client.wait(job, timeout_s=30)
    assert doc["state"] == "COMPLETED" and doc["exit_code"] == 0
    assert [e["new_state"] for e in doc["events"]] == [
        "PENDING",
        "STARTING",
        "RUNNING",
        "COMPLETED",
    ]
    assert len({a["node"] for a in doc["allocations"]}) == 2
    assert all(a["released_at"] is not None for a in doc["allocations"])
    assert client.output(job)["data"] == "hello\nhello\n"


def test_array_then_dependency_chain(client: DaemonClient) -> None:
    ids = client.submit(
        {"argv": [PY, "-c", "import time; time.sleep(0.2)"], "nodes": 1, "array": "0-3%2"}
    )
    assert len(ids) == 4
    (then,) = client.submit({"argv": ["true"], "nodes": 1, "dependency": f"afterok:{ids[0]}"})
    (fail,) = client.submit({"argv": ["false"], "nodes": 1, "dependency": f"afterok:{then}"})
    (rescue,) = client.submit({"argv": ["true"], "nodes": 1, "dependency": f"afternotok:{fail}"})
    (skipped,) = client.submit({"argv": ["true"], "nodes": 1, "dependency": f"afterok:{fail}"})
    assert client.wait(rescue, 60)["state"] == "COMPLETED"
    assert client.wait(skipped, 10)["state"] == "CANCELLED"
    docs = [client.job(i) for i in ids]
    assert [d["display_id"] for d in docs] == [f"{ids[0]}_{i}" for i in range(4)]
    assert client.job(then)["start_time"] >= max(d["end_time"] for d in docs)
    assert client.job(fail)["state"] == "FAILED"
    # Never more than 2 elements at once: their run intervals overlap at most pairwise.
    spans = sorted((d["start_time"], d["end_time"]) for d in docs)
    for i in range(len(spans) - 2):
        assert spans[i + 2][0] >= min(spans[i][1], spans[i + 1][1]) - 1e-6


BAD_INPUTS = [
    (b"{not json", 400, "body"),
    (b"[1, 2]", 422, "job"),
    (json.dumps({"argv": ["true"], "nodes": 1, "bogus": 1}).encode(), 422, "bogus"),
    (json.dumps({"argv": ["true"], "nodes": "2"}).encode(), 422, "nodes"),
    (json.dumps({"argv": ["true"], "nodes": True}).encode(), 422, "nodes"),
    (json.dumps({"argv": ["true"], "nodes": 5}).encode(), 422, "nodes"),
    (json.dumps({"argv": ["true"], "nodes": 0}).encode(), 422, "nodes"),
    (json.dumps({"argv": ["true"], "shape": "2x2:torus"}).encode(), 422, "shape"),
    (json.dumps({"argv": ["true"], "nodes": 1, "time": "abc"}).encode(), 422, "time"),
    (json.dumps({"argv": ["true"], "nodes": 1, "array": "5-1"}).encode(), 422, "array"),
    (json.dumps({"argv": ["true"], "nodes": 1, "array": "0-999999"}).encode(), 422, "array"),
    (json.dumps({"nodes": 1}).encode(), 422, "argv"),
    (json.dumps({"argv": [], "nodes": 1}).encode(), 422, "argv"),
    (json.dumps({"argv": ["a", 3], "nodes": 1}).encode(), 422, "argv"),
    (
        json.dumps({"argv": ["true"], "nodes": 1, "dependency": "afterok:99999"}).encode(),
        422,
        "dependency",
    ),
    (
        json.dumps({"argv": ["true"], "nodes": 1, "dependency": "before:1"}).encode(),
        422,
        "dependency",
    ),
    (json.dumps({"argv": ["true"], "nodes": 1, "env": {"A B": "x"}}).encode(), 422, "env"),
    (
        json.dumps({"argv": ["true"], "nodes": 1, "cpus_per_task": 64}).encode(),
        422,
        "cpus_per_task",
    ),
    (json.dumps({"argv": ["true"], "nodes": 1, "workdir": "relative"}).encode(), 422, "workdir"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "body"),
    (json.dumps({"argv": ["true"], "nodes": 1, "priority": 10**30}).encode(), 422, "priority"),
    (json.dumps({"argv": ["true"], "nodes": 10**30}).encode(), 422, "nodes"),
    (json.dumps({"argv": ["true"], "nodes": 1, "array": str(10**20)}).encode(), 422, "array"),
    (
        json.dumps({"argv": ["true"], "nodes": 1, "dependency": f"afterok:{10**30}"}).encode(),
        422,
        "dependency",
    ),
    (json.dumps({"argv": ["true"], "nodes": 1, "time": 1e400}).encode(), 422, "time"),
]


@pytest.mark.parametrize(("body", "status", "field"), BAD_INPUTS)
def test_bad_submission_names_the_field_and_stores_nothing(
    shared_daemon: DaemonProcess, client: DaemonClient, body: bytes, status: int, field: str
) -> None:
    before = len(client.jobs())
    code, doc = raw(shared_daemon, "POST", "/api/v1/jobs", body)
    assert code == status, doc
    assert doc["error"]["field"] == field
    assert field in doc["error"]["message"]
    assert len(client.jobs()) == before


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/jobs?states=RUNNING", "states"),
        ("/api/v1/jobs?limit=-1", "limit"),
        ("/api/v1/jobs?limit=" + "9" * 40, "limit"),
        ("/api/v1/jobs/" + "9" * 40, "job_id"),
        ("/api/v1/jobs?state=DONE", "state"),
        ("/api/v1/jobs/1/output?stream=x", "stream"),
    ],
)
def test_bad_queries_name_the_parameter(
    shared_daemon: DaemonProcess, path: str, field: str
) -> None:
    code, doc = raw(shared_daemon, "GET", path)
    assert code == 422 and doc["error"]["field"] == field, doc


def test_bad_batch_and_oversized_payload_store_nothing(
    shared_daemon: DaemonProcess, client: DaemonClient
) -> None:
    before = len(client.jobs())
    good = {"argv": ["true"], "nodes": 1, "hold": True}
    batch = {"jobs": [good, good, {**good, "nodes": 9}]}
    code, doc = raw(shared_daemon, "POST", "/api/v1/jobs/batch", json.dumps(batch).encode())
    assert code == 422 and doc["error"]["field"] == "jobs[2].nodes"
    code, doc = raw(shared_daemon, "POST", "/api/v1/jobs/batch", b'{"jobs": 3}')
    assert code == 422 and doc["error"]["field"] == "jobs"
    code, doc = raw(shared_daemon, "POST", "/api/v1/jobs/batch", b'{"jobs": [], "x": 1}')
    assert code == 422 and doc["error"]["field"] == "jobs"
    # Refused from its declared length, before a byte of it is read.
    host, port = shared_daemon.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/api/v1/jobs")
    conn.putheader("Authorization", f"Bearer {shared_daemon.token}")
    conn.putheader("Content-Length", str(9 * 1024 * 1024))
    conn.endheaders(b'{"argv": ["true"], "nodes": 1, "name": "xxxx')
    response = conn.getresponse()
    doc = json.loads(response.read())
    conn.close()
    assert response.status == 413 and doc["error"]["field"] == "body"
    assert len(client.jobs()) == before
    assert client.health()["status"] == "ok"  # and the daemon still serves


def test_changes_need_the_token_and_leave_nothing_changed(
    shared_daemon: DaemonProcess, client: DaemonClient
) -> None:
    token_file = shared_daemon.root / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    (job,) = client.submit({"argv": ["true"], "nodes": 1, "hold": True})
    before = len(client.jobs())
    body = json.dumps({"argv": ["true"], "nodes": 1}).encode()
    for token in (None, "wrong", shared_daemon.token + "x", ""):
        code, doc = raw(shared_daemon, "POST", "/api/v1/jobs", body, token=token)
        assert code == 401, doc
        code, _ = raw(shared_daemon, "POST", f"/api/v1/jobs/{job}/cancel", b"{}", token=token)
        assert code == 401
        code, _ = raw(shared_daemon, "POST", "/api/v1/jobs/batch", b"{", token=token)
        assert code == 401  # refused before the body is even parsed
    assert len(client.jobs()) == before
    assert client.job(job)["state"] == "HELD"
    assert client.action(job, "cancel") == "CANCELLED"
    with pytest.raises(ApiError) as err:
        client.action(job, "release")
    assert err.value.status == 409
    with pytest.raises(ApiError) as err:
        client.job(10**9)
    assert err.value.status == 404


def test_shell_metacharacters_run_exactly_as_given(client: DaemonClient, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    weird = f"a;b|c&d $(touch {canary}) `touch {canary}` 'q' \"dq\" >x <y *"
    target = tmp_path / weird.replace("/", "_")
    code = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.argv[2])"
    (job,) = client.submit(
        {"argv": [PY, "-c", code, str(target), weird], "nodes": 1, "name": weird}
    )
    doc = client.wait(job, 30)
    assert doc["state"] == "COMPLETED" and doc["name"] == weird
    assert target.read_text() == weird
    assert not canary.exists()
    # A script the user submits explicitly is run by the shell it names.
    (script_job,) = client.submit(
        {"script": f'#!/bin/sh\necho "$((6*7))" > {tmp_path}/sh', "nodes": 1}
    )
    assert client.wait(script_job, 30)["state"] == "COMPLETED"
    assert (tmp_path / "sh").read_text() == "42\n"


def test_metrics_openapi_nodes(shared_daemon: DaemonProcess, client: DaemonClient) -> None:
    text = client.request("GET", "/metrics")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    values = dict(line.rsplit(" ", 1) for line in lines)
    assert float(values["orch_nodes"]) == 4
    assert 'orch_jobs{state="COMPLETED"}' in values
    assert all(float(v) >= 0 for v in values.values())
    spec = client.request("GET", "/api/v1/openapi.json")
    assert spec["openapi"].startswith("3.")
    assert {
        "/api/v1/jobs",
        "/api/v1/jobs/batch",
        "/api/v1/jobs/{job_id}/cancel",
        "/metrics",
        "/api/v1/nodes",
        "/api/v1/health",
    } <= set(spec["paths"])
    schema = spec["components"]["schemas"]["JobSubmission"]
    assert schema["additionalProperties"] is False and "array" in schema["properties"]
    nodes = client.nodes()
    assert nodes["size"] == 4 and len(nodes["owners"]) == 4


def test_parallel_clients_every_submission_exactly_once(
    shared_daemon: DaemonProcess, client: DaemonClient
) -> None:
    n_threads, per_thread = 8, 40
    acked: list[list[int]] = [[] for _ in range(n_threads)]
    errors: list[BaseException] = []
    tag = uuid.uuid4().hex[:8]

    def work(k: int) -> None:
        c = shared_daemon.client()
        try:
            for i in range(per_thread):
                acked[k] += c.submit(
                    {"argv": ["true"], "nodes": 1, "hold": True, "name": f"{tag}-{k}-{i}"}
                )
        except BaseException as e:  # reported below
            errors.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    ids = [i for ids in acked for i in ids]
    assert len(ids) == len(set(ids)) == n_threads * per_thread
    stored = [j for j in client.jobs(state="HELD") if j["name"].startswith(tag)]
    assert sorted(j["id"] for j in stored) == sorted(ids)
    assert len({j["name"] for j in stored}) == n_threads * per_thread
    for job in stored:
        client.action(job["id"], "cancel")


def test_idempotency_key_makes_a_retry_harmless(client: DaemonClient) -> None:
    key = uuid.uuid4().hex
    body = {"argv": ["true"], "nodes": 1, "hold": True, "array": "0-2"}
    first = client.submit(body, key=key)
    assert client.submit(body, key=key) == first
    assert len(client.jobs(array_id=first[0])) == 3
    for job in first:
        client.action(job, "cancel")


def test_cli_submit_queue_show_logs_nodes_cancel(
    shared_daemon: DaemonProcess, client: DaemonClient
) -> None:
    done = orch(
        shared_daemon,
        "submit",
        "--parsable",
        "-N",
        "2",
        "-J",
        "cli;job",
        "-t",
        "1:00",
        "--",
        PY,
        "-c",
        # One write per line: both tasks append to one file (print may split its writes).
        "import os; os.write(1, ('rank ' + os.environ['RANK'] + '\\n').encode())",
    )
    assert done.returncode == 0, done.stderr
    job = int(done.stdout)
    logs = orch(shared_daemon, "logs", "-f", str(job))
    assert logs.returncode == 0
    assert sorted(logs.stdout.splitlines()) == ["rank 0", "rank 1"]
    shown = orch(shared_daemon, "show", str(job))
    assert "COMPLETED" in shown.stdout and "cli;job" in shown.stdout
    long = orch(shared_daemon, "submit", "--parsable", "-N", "3", "--", "sleep", "30")
    long_id = int(long.stdout)
    wait_for(lambda: client.job(long_id)["state"] == "RUNNING")
    queue = orch(shared_daemon, "queue")
    assert str(long_id) in queue.stdout and "RUNNING" in queue.stdout
    nodes = orch(shared_daemon, "nodes")
    assert "3 of 4 allocated" in nodes.stdout and f"A={long_id}" in nodes.stdout
    assert orch(shared_daemon, "cancel", str(long_id)).returncode == 0
    assert client.wait(long_id, 10)["state"] == "CANCELLED"
    bad = orch(shared_daemon, "submit", "-N", "9", "true")
    assert bad.returncode != 0 and "nodes" in bad.stderr
    bad = orch(shared_daemon, "submit", "--shape", "2x2x2:torus", "true")
    assert bad.returncode != 0 and "shape" in bad.stderr


def test_orch_daemon_start_status_stop(tmp_path: Path) -> None:
    root = tmp_path / "cli-daemon"
    env = {**os.environ, "ORCH_STATE_DIR": str(root)}
    orch_bin = str(Path(PY).parent / "orch")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [orch_bin, *args], capture_output=True, text=True, env=env, timeout=90, check=False
        )

    started = run("daemon", "start", "--nodes", "2")
    assert started.returncode == 0, started.stderr
    assert "daemon" in started.stdout and str(root) in started.stdout
    again = run("daemon", "start", "--nodes", "2")
    assert again.returncode != 0 and "already runs" in again.stderr
    status = run("daemon", "status")
    assert status.returncode == 0 and "0/2 nodes allocated" in status.stdout
    # The URL stands alone at the end of its line (it ended with a stray ':'), and works.
    url = status.stdout.splitlines()[-1].split()[-1]
    with urllib.request.urlopen(url, timeout=30) as page:
        assert page.status == 200 and b"<html" in page.read().lower()
    missing = run("submit", "--", "/nonexistent/program")
    job = int(missing.stdout.split()[-1])
    client = DaemonClient.from_state_dir(root)
    doc = client.wait(job, 30)
    assert doc["state"] == "FAILED" and doc["exit_code"] == 127
    assert "/nonexistent/program" in client.output(job, "stderr")["data"]
    stopped = run("daemon", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert run("daemon", "status").returncode != 0
    assert not (root / "daemon.json").exists()


def test_unix_socket_api_is_owner_only(tmp_path: Path) -> None:
    root = tmp_path / "d"
    sock = root / "api.sock"
    daemon = start_daemon(root, "--nodes", "2", "--socket", str(sock))
    try:
        assert daemon.url == f"unix://{sock}"
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        client = daemon.client()
        code = "import os; os.write(1, b'via unix\\n')"  # one write: two tasks, one file
        (job,) = client.submit({"argv": [PY, "-c", code], "nodes": 2})
        assert client.wait(job, 30)["state"] == "COMPLETED"
        assert client.output(job)["data"] == "via unix\nvia unix\n"
        listed = orch(daemon, "queue", "-a")
        assert listed.returncode == 0 and str(job) in listed.stdout
        unauthorized = DaemonClient(daemon.url, token="wrong")
        with pytest.raises(ApiError) as err:
            unauthorized.submit({"argv": ["true"], "nodes": 1})
        assert err.value.status == 401
    finally:
        stop_daemon(daemon)
    assert not sock.exists()


def test_listing_pages(shared_daemon: DaemonProcess, client: DaemonClient) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = [
        i
        for ids in client.submit_batch(
            [{"argv": ["true"], "nodes": 1, "hold": True, "name": tag}] * 25
        )
        for i in ids
    ]
    code, doc = raw(shared_daemon, "GET", f"/api/v1/jobs?name={tag}&limit=10")
    assert code == 200 and len(doc["jobs"]) == 10 and doc["next_offset"] == 10
    code, doc = raw(shared_daemon, "GET", f"/api/v1/jobs?name={tag}&limit=10&offset=20")
    assert [j["id"] for j in doc["jobs"]] == ids[20:] and doc["next_offset"] is None
    assert [j["id"] for j in client.jobs(name=tag)] == ids
    assert [j["id"] for j in client.jobs(name=tag, limit=7)] == ids[:7]
    for job in ids:
        client.action(job, "cancel")


def test_client_takes_the_state_folder_as_text_or_path(shared_daemon: DaemonProcess) -> None:
    """Users pass a string (it raised TypeError on ``/``); the client accepts both."""
    for root in (str(shared_daemon.root), shared_daemon.root):
        client = DaemonClient.from_state_dir(root)
        assert client.health()["status"] == "ok"
        client.close()


def test_cli_queue_and_cancel_take_slurms_filters(
    shared_daemon: DaemonProcess, client: DaemonClient
) -> None:
    # As squeue -n and scancel -n/-t: a user cancels a whole sweep by its name (issue 17).
    body = {"argv": ["true"], "nodes": 1, "hold": True}
    mine = client.submit({**body, "name": "filter-sweep", "array": "0-2"})
    other = client.submit({**body, "name": "filter-other"})
    listed = orch(shared_daemon, "queue", "-n", "filter-sweep", "-t", "HELD", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(j["id"] for j in json.loads(listed.stdout)) == sorted(mine)
    done = orch(shared_daemon, "cancel", "-n", "filter-sweep", "-t", "HELD")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3 and "CANCELLED" in done.stdout
    assert {client.job(j)["state"] for j in mine} == {"CANCELLED"}
    assert client.job(other[0])["state"] == "HELD"
    # Filters and ids together: only the ids the filters match.
    picked = orch(shared_daemon, "cancel", "-n", "filter-sweep", str(other[0]))
    assert "no job matches" in picked.stderr and client.job(other[0])["state"] == "HELD"
    nothing = orch(shared_daemon, "cancel")
    assert nothing.returncode == 2 and "give job ids, or a filter" in nothing.stderr
    client.action(other[0], "cancel")


def test_cli_show_reads_as_scontrol(shared_daemon: DaemonProcess, client: DaemonClient) -> None:
    # Dates, not epoch seconds; and where a finished job ran (issue 17).
    (job,) = client.submit({"argv": ["true"], "nodes": 2, "time": 90})
    wait_for(lambda: client.job(job)["state"] == "COMPLETED")
    shown = orch(shared_daemon, "show", str(job))
    assert shown.returncode == 0, shown.stderr
    parts = [line.partition(":") for line in shown.stdout.splitlines()]
    fields = {key.strip(): value.strip() for key, sep, value in parts if sep}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", fields["end_time"]), fields
    assert fields["time"] == "00:01:30"
    nodes = {a["node"] for a in client.job(job)["allocations"]}
    assert len(nodes) == 2 and fields["nodelist"] not in ("", "-")


def test_orch_nodes_names_array_elements_as_orch_queue(
    shared_daemon: DaemonProcess, client: DaemonClient
) -> None:
    ids = client.submit({"argv": ["sleep", "30"], "nodes": 1, "array": "0-1", "name": "arr"})
    wait_for(lambda: all(client.job(i)["state"] == "RUNNING" for i in ids))
    try:
        shown = {client.job(i)["display_id"] for i in ids}
        nodes = orch(shared_daemon, "nodes")
        legend = nodes.stdout.strip().splitlines()[-1]
        assert all(name in legend for name in shown), (shown, legend)
        assert all("_" in name for name in shown)
    finally:
        for job in ids:
            client.action(job, "cancel")


def test_cli_submit_begin_waits_with_slurms_reason(
    shared_daemon: DaemonProcess, client: DaemonClient
) -> None:
    done = orch(shared_daemon, "submit", "--parsable", "--begin", "now+1hour", "--", "true")
    assert done.returncode == 0, done.stderr
    job = int(done.stdout)
    wait_for(lambda: client.job(job)["reason"] == "BeginTime")
    assert client.job(job)["state"] == "PENDING"
    client.action(job, "cancel")
    bad = orch(shared_daemon, "submit", "--begin", "someday", "--", "true")
    assert bad.returncode != 0 and "begin" in bad.stderr


def test_orch_history_as_sacct(shared_daemon: DaemonProcess, client: DaemonClient) -> None:
    # Issue 17: finished jobs by time range, user, state and name, as a table, JSON, CSV, and a
    # DataFrame from Python.
    ok = client.submit({"argv": ["true"], "nodes": 1, "name": "hist-ok"})
    bad = client.submit({"argv": ["false"], "nodes": 1, "name": "hist-bad"})
    wait_for(lambda: all(client.job(j)["state"] in ("COMPLETED", "FAILED") for j in ok + bad))
    done = orch(shared_daemon, "history", "-n", "hist-bad", "--format", "json")
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert (row["jobid"], row["state"], row["exitcode"]) == (str(bad[0]), "FAILED", 1)
    assert re.fullmatch(r"\d\d:\d\d:\d\d", row["elapsed"])
    failed = orch(shared_daemon, "history", "-t", "FAILED", "--format", "csv").stdout
    assert failed.splitlines()[0] == (
        "jobid,name,user,state,exitcode,elapsed,start,end,cputime,maxrss"
    )
    assert f"{bad[0]},hist-bad," in failed and f"{ok[0]},hist-ok," not in failed
    table = orch(shared_daemon, "history", "-n", "hist-ok").stdout.splitlines()
    assert table[0].split() == ["JOBID", "NAME", "USER", "STATE", "EXITCODE", "ELAPSED", "START",
                                "END", "CPUTIME", "MAXRSS"]  # fmt: skip
    assert len(table) == 2 and "COMPLETED" in table[1]
    future = orch(shared_daemon, "history", "-S", "now+1hour", "--format", "json")
    assert json.loads(future.stdout) == []
    frame = client.history_frame(name="hist-ok")
    assert list(frame["state"]) == ["COMPLETED"] and (frame["elapsed_s"] >= 0).all()
    nonsense = orch(shared_daemon, "history", "-S", "last tuesday")
    assert nonsense.returncode == 2 and "--starttime" in nonsense.stderr
