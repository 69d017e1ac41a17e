"""Issue 13, hole 4: the API's limits on connections, time, body size and jobs.

Each found by a hostile client against the http.server API: 1,100 idle connections made the API
unreachable; a connection that never sends stayed open for ever; one 6.5 kB request made
1,000,000 jobs. A daemon with small limits, so the tests stay quick.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import DaemonProcess, count_jobs, start_daemon, stop_daemon

MAX_CONNECTIONS = 64
LIMITS = (
    "--max-connections",
    str(MAX_CONNECTIONS),
    "--idle-timeout",
    "1",
    "--request-timeout",
    "1",
    "--max-queued-jobs",
    "30",
    "--max-body-bytes",
    "100000",
)


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    daemon = start_daemon(tmp_path_factory.mktemp("limited"), "--nodes", "2", *LIMITS)
    yield daemon
    stop_daemon(daemon)


def address(daemon: DaemonProcess) -> tuple[str, int]:
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def request(
    daemon: DaemonProcess, method: str, path: str, body: Any = None, timeout: float = 10.0
) -> tuple[int, http.client.HTTPMessage, dict[str, Any]]:
    conn = http.client.HTTPConnection(*address(daemon), timeout=timeout)
    headers = {"Authorization": f"Bearer {daemon.token}", "Content-Type": "application/json"}
    try:
        conn.request(method, path, None if body is None else json.dumps(body), headers)
        response = conn.getresponse()
        return response.status, response.headers, json.loads(response.read())
    finally:
        conn.close()


def read_reply(sock: socket.socket, timeout: float) -> bytes:
    """Everything the daemon sends until it closes the connection (b"": closed, nothing sent)."""
    sock.settimeout(timeout)
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    return reply


def test_idle_connections_do_not_lock_clients_out(shared_daemon: DaemonProcess) -> None:
    """The report's attack, on the default limits: 1,100 connections that send nothing."""
    idle = [socket.create_connection(address(shared_daemon)) for _ in range(1100)]
    try:
        started = time.monotonic()
        status, _, doc = request(shared_daemon, "GET", "/api/v1/health", timeout=5)
        assert status == 200 and doc["status"] == "ok"
        job = {"argv": ["true"], "nodes": 1, "hold": True}
        status, _, doc = request(shared_daemon, "POST", "/api/v1/jobs", job, timeout=5)
        assert status == 201, doc
        assert time.monotonic() - started < 3
        # Most idle ones were closed to make room: the daemon holds at most its limit.
        closed = 0
        for sock in idle:
            sock.settimeout(0.5)
            try:
                closed += sock.recv(1) == b""
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        assert closed >= len(idle) - 256
    finally:
        for sock in idle:
            sock.close()


def test_a_connection_that_sends_nothing_is_closed_after_the_idle_timeout(
    limited: DaemonProcess,
) -> None:
    with socket.create_connection(address(limited)) as sock:
        started = time.monotonic()
        assert read_reply(sock, timeout=10) == b""
        assert time.monotonic() - started < 5


def test_headers_that_never_end_get_408_naming_the_request(limited: DaemonProcess) -> None:
    with socket.create_connection(address(limited)) as sock:
        sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        reply = read_reply(sock, timeout=10)
    assert time.monotonic() - started < 5
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), reply
    assert json.loads(body)["error"]["field"] == "request"


def test_a_body_that_stops_arriving_gets_408(limited: DaemonProcess) -> None:
    with socket.create_connection(address(limited)) as sock:
        sock.sendall(
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n"
            b"Authorization: Bearer " + limited.token.encode() + b"\r\n\r\n{"
        )
        reply = read_reply(sock, timeout=10)
    assert reply.startswith(b"HTTP/1.1 408"), reply


def test_a_chunked_body_over_the_limit_gets_413(limited: DaemonProcess) -> None:
    before = count_jobs(limited.client())
    chunk = b"x" * 50_000
    with socket.create_connection(address(limited)) as sock:
        sock.sendall(
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            b"Authorization: Bearer " + limited.token.encode() + b"\r\n\r\n"
        )
        try:
            for _ in range(4):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the end: as it should
        reply = read_reply(sock, timeout=10)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply[:300]
    assert json.loads(body)["error"]["field"] == "body"
    assert count_jobs(limited.client()) == before


def test_a_client_still_sending_after_a_413_reads_the_413(limited: DaemonProcess) -> None:
    """The daemon refuses a body while the client is still sending it: the client reads the
    413, not a reset. Closing a socket with unread bytes makes the kernel send RST, which
    drops the reply from the client's buffer; so the daemon half-closes and reads the rest of
    the body away before it closes (a lingering close, as web servers do)."""
    chunk = b"x" * 50_000
    for _ in range(3):
        with socket.create_connection(address(limited)) as sock:
            sock.sendall(
                b"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                b"Authorization: Bearer " + limited.token.encode() + b"\r\n\r\n"
            )
            for _ in range(3):  # 150 kB: over the 100 kB limit
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            time.sleep(0.3)  # the daemon has answered 413 by now
            for _ in range(4):  # and the client, not reading yet, goes on sending
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                time.sleep(0.05)
            reply = read_reply(sock, timeout=10)
        assert reply.startswith(b"HTTP/1.1 413"), reply[:300]


def test_huge_headers_get_a_4xx_with_a_json_body(limited: DaemonProcess) -> None:
    with socket.create_connection(address(limited)) as sock:
        sock.sendall(
            b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Junk: "
            + b"a" * 40_000
            + b"\r\n\r\n"
        )
        reply = read_reply(sock, timeout=10)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split()[1].startswith(b"4"), reply[:300]
    assert json.loads(body)["error"]["field"] == "request"


def test_one_small_request_cannot_make_a_million_jobs(shared_daemon: DaemonProcess) -> None:
    """The request of the report: 100 arrays of 10,000 in 6.5 kB (default limits)."""
    client = shared_daemon.client()
    before = count_jobs(client)
    job = {"argv": ["true"], "nodes": 1, "array": "0-9999", "hold": True}
    status, _, doc = request(shared_daemon, "POST", "/api/v1/jobs/batch", {"jobs": [job] * 100})
    assert status == 413, doc
    assert doc["error"]["code"] == "too_many_jobs" and doc["error"]["field"] == "jobs"
    assert "1000000" in doc["error"]["message"] and "10000" in doc["error"]["message"]
    assert count_jobs(client) == before


def test_a_full_queue_answers_429_with_retry_after(limited: DaemonProcess) -> None:
    client = limited.client()
    waiting = len(client.jobs(state="PENDING,HELD"))
    room = 30 - waiting
    job = {"argv": ["true"], "nodes": 1, "hold": True}
    status, _, doc = request(limited, "POST", "/api/v1/jobs", {**job, "array": f"0-{room - 1}"})
    assert status == 201, doc
    status, headers, doc = request(limited, "POST", "/api/v1/jobs", job)
    assert status == 429, doc
    assert doc["error"]["code"] == "queue_full" and int(headers["Retry-After"]) > 0
    for ids in client.jobs(state="HELD"):
        client.action(ids["id"], "cancel")
    status, _, doc = request(limited, "POST", "/api/v1/jobs", job)
    assert status == 201, doc


def test_the_daemon_refuses_a_limit_that_makes_no_sense(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="max-connections"):
        start_daemon(tmp_path, "--nodes", "1", "--max-connections", "0")
