"""The CLI's HTTP/1.1 client (``orchestrator.daemon.wire``, issue 17: ``http.client`` cost a
third of each ``orch`` command's start) against replies written byte by byte: every body framing
HTTP/1.1 has, a connection the server closes, and replies that are not HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from orchestrator.daemon.wire import Connection


class RawServer:
    """Answers each request on a connection with the next of ``replies`` (bytes), then closes
    the connection when told to; records the requests it read."""

    def __init__(self, replies: list[bytes], close_after: bool = False) -> None:
        self.replies = list(replies)
        self.close_after = close_after
        self.requests: list[bytes] = []
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.replies:
            conn, _ = self.sock.accept()
            self.connections += 1
            with conn:
                while self.replies:
                    data = b""
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if not data:
                        break
                    head, _, rest = data.partition(b"\r\n\r\n")
                    for line in head.split(b"\r\n"):
                        if line.lower().startswith(b"content-length:"):
                            need = int(line.split(b":")[1])
                            while len(rest) < need:
                                rest += conn.recv(65536)
                    self.requests.append(head + b"\r\n\r\n" + rest)
                    conn.sendall(self.replies.pop(0))
                    if self.close_after:
                        break


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[RawServer]:
    replies, close_after = request.param
    raw = RawServer(replies, close_after)
    yield raw
    raw.sock.close()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    return head + b"Content-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@pytest.mark.parametrize(
    "server",
    [([ok(b'{"a": 1}'), ok(b'{"b": 2}')], False)],
    indirect=True,
)
def test_two_requests_on_one_kept_alive_connection(server: RawServer) -> None:
    conn = Connection("127.0.0.1", server.port)
    first = conn.request("POST", "/x", b'{"q": 1}', {"Content-Length": "8"})
    second = conn.request("GET", "/y", None, {})
    assert (first.status, first.body, second.body) == (200, b'{"a": 1}', b'{"b": 2}')
    assert first.header("content-type") == "application/json"
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST /x HTTP/1.1\r\nHost: 127.0.0.1:")
    assert server.requests[0].endswith(b'\r\n\r\n{"q": 1}')


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"4;ext=1\r\nabcd\r\n3\r\nefg\r\n0\r\nX-Trailer: 1\r\n\r\n"
)
UNTIL_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nthe rest of it"


@pytest.mark.parametrize("server", [([CHUNKED, UNTIL_CLOSE], True)], indirect=True)
def test_chunked_and_close_delimited_bodies(server: RawServer) -> None:
    conn = Connection("127.0.0.1", server.port)
    assert conn.request("GET", "/a", None, {}).body == b"abcdefg"
    # The server closed after each reply: the next request opens a new connection by itself
    # only when the reply said so; here it did not, so the send finds the connection gone.
    with pytest.raises(OSError):
        conn.request("GET", "/b", None, {})
    conn.close()
    assert conn.request("GET", "/b", None, {}).body == b"the rest of it"


@pytest.mark.parametrize(
    "server",
    [([ok(b"{}", b"Connection: close\r\n"), ok(b"[]")], True)],
    indirect=True,
)
def test_a_reply_that_says_close_makes_the_next_request_reconnect(server: RawServer) -> None:
    conn = Connection("127.0.0.1", server.port)
    assert conn.request("GET", "/a", None, {}).body == b"{}"
    assert conn.request("GET", "/b", None, {}).body == b"[]"
    assert server.connections == 2


@pytest.mark.parametrize(
    "server",
    [
        ([b"SSH-2.0-OpenSSH_9.2\r\n\r\n"], True),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"], True),
        ([b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n"], True),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"], True),
    ],
    indirect=True,
)
def test_what_is_not_a_whole_http_reply_is_an_oserror(server: RawServer) -> None:
    with pytest.raises(OSError):
        Connection("127.0.0.1", server.port, timeout=5).request("GET", "/", None, {})


def test_the_job_commands_load_no_http_client() -> None:
    code = (
        "import sys, orchestrator.cli.root, orchestrator.cli.jobs, orchestrator.daemon.client\n"
        "print(sorted(m for m in ('http.client', 'email.parser', 'ssl') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
