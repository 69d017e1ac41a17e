"""HTTP/1.1 to the daemon's API on a socket: the little of the protocol the client needs.

The ``orch`` job commands start a Python for one request each, and ``http.client`` costs about
25 ms of that start (it imports the ``email`` parser for its headers and ``ssl``), a third of the
whole command. The daemon serves plain HTTP on loopback or a Unix socket and answers JSON with a
``Content-Length`` (chunked and close-delimited bodies are read too), so a request is a few
lines over a socket. Errors are :class:`OSError` s, as ``http.client``'s connection errors are,
so the client's retry loop treats them alike.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["Connection", "Response"]

MAX_LINE = 65536
"""Longest status or header line read (the daemon's own are short)."""


@dataclass(frozen=True)
class Response:
    """A reply: status, headers (names in lower case) and the body read whole."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


class Connection:
    """One kept-alive connection to ``host:port``, or to the Unix socket ``socket_path``."""

    def __init__(
        self, host: str, port: int, socket_path: str | None = None, timeout: float = 30.0
    ) -> None:
        self.host, self.port, self.socket_path, self.timeout = host, port, socket_path, timeout
        self._sock: socket.socket | None = None
        self._reader: BinaryIO | None = None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> BinaryIO:
        if self.socket_path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        else:
            # An ASCII host name as bytes, which getaddrinfo takes as they are (typeshed names
            # str only): a str is first encoded with the IDNA codec, whose import (with
            # ``unicodedata`` and ``stringprep``) costs a command line about 3 ms.
            host = self.host.encode("ascii") if self.host.isascii() else self.host
            address = (host, self.port)
            sock = socket.create_connection(address, self.timeout)  # type: ignore[arg-type]
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._reader = sock.makefile("rb")
        return self._reader

    def request(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> Response:
        """Send one request and read its reply (the connection is closed after a reply that
        says ``Connection: close``).

        Raises:
            OSError: the connection failed or the reply is not HTTP/1.x.
        """
        reader = self._reader if self._reader is not None else self._connect()
        assert self._sock is not None
        host = "localhost" if self.socket_path is not None else f"{self.host}:{self.port}"
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._sock.sendall(head + body if body else head)
        response = _read_response(reader, method)
        if response.header("connection").lower() == "close":
            self.close()
        return response


def _line(reader: BinaryIO) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if not line:
        raise ConnectionResetError("the daemon closed the connection without a reply")
    if len(line) > MAX_LINE or not line.endswith(b"\n"):
        raise ConnectionError("a reply line longer than 64 KiB")
    return line


def _read_response(reader: BinaryIO, method: str) -> Response:
    status_line = _line(reader).decode("latin-1").split(None, 2)
    if (
        len(status_line) < 2
        or not status_line[0].startswith("HTTP/1.")
        or not (status_line[1].isdigit())
    ):
        raise ConnectionError(f"not an HTTP reply: {' '.join(status_line)[:80]!r}")
    status = int(status_line[1])
    headers: dict[str, str] = {}
    while (line := _line(reader)) not in (b"\r\n", b"\n"):
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise ConnectionError(f"a malformed header line: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return Response(status, headers, b"")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return Response(status, headers, _read_chunked(reader))
    length = headers.get("content-length")
    if length is None:
        headers["connection"] = "close"  # the body ends where the connection does
        return Response(status, headers, reader.read())
    if not length.isdigit():
        raise ConnectionError(f"a malformed Content-Length: {length[:40]!r}")
    body = reader.read(int(length))
    if len(body) < int(length):
        raise ConnectionResetError("the daemon closed the connection in the middle of a reply")
    return Response(status, headers, body)


def _read_chunked(reader: BinaryIO) -> bytes:
    parts: list[bytes] = []
    while True:
        size_text = _line(reader).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ConnectionError(f"a malformed chunk size: {size_text[:40]!r}") from None
        if size == 0:
            while _line(reader) not in (b"\r\n", b"\n"):  # trailers
                pass
            return b"".join(parts)
        chunk = reader.read(size)
        if len(chunk) < size:
            raise ConnectionResetError("the daemon closed the connection in the middle of a reply")
        parts.append(chunk)
        _line(reader)  # the CRLF after the chunk
