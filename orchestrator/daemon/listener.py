"""Serving the API: uvicorn on a TCP port or a Unix socket, with the limits uvicorn lacks.

uvicorn has no limit on open connections that spares well-behaved clients (its
``limit_concurrency`` answers 503 to everyone once idle sockets fill it), no timeout before a
connection's first request, none on a request's headers and body, and it does not hand the
socket to the application (so the kernel's word on who connected to a Unix socket,
``SO_PEERCRED``, is lost). :class:`GuardedHttpProtocol` adds them (:class:`ApiLimits` names the
defaults):

* a connection that sends nothing for ``idle_timeout_s`` is closed, before its first request
  too (uvicorn's keep-alive timeout covers the time between requests only);
* a request whose headers and body do not arrive within ``request_timeout_s`` gets 408;
* past ``max_connections``, a new connection closes the one idle the longest; when none is idle,
  the new one gets 503 with ``Retry-After`` (1,100 idle connections no longer lock clients out);
* on a Unix socket the peer's pid, uid and gid go to the request's ``state`` (``peer``);
* a connection closed while its request is still arriving (an error answered before the body
  ended: 413, 408, 431) closes lingering: the daemon half-closes and reads the rest away for up
  to ``LINGER_S`` first, because closing a socket with unread bytes makes the kernel send a
  reset, and a reset drops the error reply from the client's buffer before it reads it.
"""

from __future__ import annotations

import asyncio
import functools
import grp
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from orchestrator.daemon.access import Access
from orchestrator.daemon.api import ApiLimits, create_app, error_document
from orchestrator.daemon.service import Daemon

__all__ = ["ApiServer", "GuardedHttpProtocol"]

log = logging.getLogger("orchestrator.daemon.api")
_PEERCRED = struct.Struct("3i")
LINGER_S = 1.0
"""How long a lingering close reads and discards what the client still sends."""


class _LingeringTransport:
    """The connection's transport as uvicorn and the protocol see it: :meth:`close` while a
    request is still arriving half-closes instead (the reply already written goes out, then
    FIN), and the socket closes when the client closes its side or after :data:`LINGER_S`."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self.lingering = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self.is_closing():
            return
        if not (self._protocol.receiving and self._transport.can_write_eof()):
            self._transport.close()
            return
        self.lingering = True
        self._transport.write_eof()
        self._transport.resume_reading()  # uvicorn may have paused it at its high-water mark
        self._protocol.loop.call_later(LINGER_S, self._transport.close)


def _raw_error(status: int, phrase: str, code: str, message: str, field: str, extra: str) -> bytes:
    body = json.dumps(error_document(code, message, field)).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n{extra}\r\n"
    )
    return head.encode() + body


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol on httptools (llhttp; a third of h11's cost per request)
    with idle and request timeouts, a header size limit, a connection limit that evicts idle
    connections first, JSON bodies on protocol errors, and ``SO_PEERCRED``."""

    def __init__(self, *args: Any, limits: ApiLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.last_active = time.monotonic()
        self.receiving = False  # bytes of a request arrived, the request is not complete
        self.header_bytes = 0  # of the request being received
        self.headers_done = False
        self.timer: asyncio.TimerHandle | None = None

    # -- connection ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family == socket.AF_UNIX:
            raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            # Per connection: uvicorn copies app_state into every request's scope["state"].
            self.app_state = {**self.app_state, "peer": _PEERCRED.unpack(raw)}
        if len(self.connections) > self.limits.max_connections and not self._evict_one():
            transport.write(
                _raw_error(
                    503,
                    "Service Unavailable",
                    "too_many_connections",
                    f"the daemon serves {self.limits.max_connections} connections at most and "
                    "all are busy; retry shortly",
                    "connection",
                    "retry-after: 1\r\n",
                )
            )
            transport.close()
            return
        self._arm(self.limits.idle_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _idle(self) -> bool:
        return not self.receiving and (self.cycle is None or self.cycle.response_complete)

    def _evict_one(self) -> bool:
        """Close the connection idle the longest (not this one); False when none is idle."""
        idle = [
            c
            for c in self.connections
            if c is not self and isinstance(c, GuardedHttpProtocol) and c._idle()
        ]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.last_active)
        victim.transport.close()
        return True

    # -- timers -------------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _expired(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            return
        if self.receiving and (self.cycle is None or not self.cycle.response_started):
            self.transport.write(
                _raw_error(
                    408,
                    "Request Timeout",
                    "request_timeout",
                    f"the request did not arrive within {self.limits.request_timeout_s:g} s",
                    "request",
                    "",
                )
            )
            self.transport.close()
        elif self._idle():
            self.transport.close()

    # -- data ---------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # a lingering close: the rest of a refused request, read away
        self.last_active = time.monotonic()
        if not self.receiving and self._idle():
            self.receiving, self.headers_done, self.header_bytes = True, False, 0
            self._arm(self.limits.request_timeout_s)
        if self.receiving and not self.headers_done:
            # llhttp has no limit on the size of headers.
            end = data.find(b"\r\n\r\n")
            self.header_bytes += end + 4 if end >= 0 else len(data)
            if self.header_bytes > self.limits.max_header_bytes:
                self.transport.write(
                    _raw_error(
                        431,
                        "Request Header Fields Too Large",
                        "headers_too_large",
                        f"the request line and headers exceed {self.limits.max_header_bytes} bytes",
                        "request",
                        "",
                    )
                )
                self.transport.close()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self.headers_done = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.receiving = False
        self._disarm()

    def on_response_complete(self) -> None:
        self.last_active = time.monotonic()
        super().on_response_complete()  # arms uvicorn's keep-alive timeout

    def send_400_response(self, msg: str) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(_raw_error(400, "Bad Request", "bad_request", msg, "request", ""))
        self.transport.close()


class ApiServer:
    """The API of one daemon on TCP (loopback by default) or on a Unix socket.

    The socket is bound when the object is made (so :attr:`url` is known, port 0 resolved);
    :meth:`serve_forever` serves until :meth:`shutdown`.

    Args:
        daemon: The daemon whose jobs it serves.
        token: The daemon's bearer token (or ``access``, for shared mode).
        host: Address to bind (loopback by default).
        port: Port (0: any free one).
        allowed_hosts: Names accepted in ``Host`` besides ``localhost``, ``host`` and IP
            addresses (a DNS-rebinding page sends a name, never an address).
        socket_path: Serve on this Unix socket instead (mode 0600; 0660 with ``access``'s
            shared group). Any ``Host`` is accepted there: no web page can reach it.
        access: Who is asking; default: the owner with ``token``.
        limits: Connection, request, body and queue limits.
    """

    def __init__(
        self,
        daemon: Daemon,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed_hosts: Iterable[str] = (),
        *,
        socket_path: Path | None = None,
        access: Access | None = None,
        limits: ApiLimits | None = None,
    ) -> None:
        self.daemon = daemon
        self.limits = limits or ApiLimits()
        self.access = access or Access(token)
        self.socket_path = socket_path
        hosts: set[str] | None = None
        if socket_path is not None:
            self.socket = self._bind_unix(socket_path)
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            # proto given: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto
            # says TCP, and accepted sockets inherit the listener's. With Nagle on, a response
            # written in two parts waits for the client's delayed ACK: 40 ms per request.
            self.socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind((host, port))
            hosts = {"localhost", host, *allowed_hosts}
        self.socket.listen(1024)
        self.socket.set_inheritable(False)
        self.host = host
        app = create_app(daemon, self.access, limits=self.limits, allowed_hosts=hosts)
        config = uvicorn.Config(
            app,
            http=functools.partial(GuardedHttpProtocol, limits=self.limits),  # type: ignore[arg-type]
            lifespan="off",
            proxy_headers=False,  # no proxy is trusted: the client's address is the peer's
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_keep_alive=int(max(1, self.limits.idle_timeout_s)),
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self._done = threading.Event()
        self._serving = False

    def _bind_unix(self, path: Path) -> socket.socket:
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # created 0600: no window with a wider mode
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        gid = self.access.shared_gid
        if gid is not None:
            # Shared mode: the group may connect; the kernel tells the daemon who did.
            os.chown(path, -1, gid)
            os.chmod(path, 0o660)
            log.info("socket %s open to group %s", path, _group_name(gid))
        return sock

    @property
    def server_address(self) -> Any:
        """The bound address: ``(host, port)`` on TCP, the path on a Unix socket."""
        return self.socket.getsockname()

    @property
    def url(self) -> str:
        if self.socket_path is not None:
            return f"unix://{self.socket_path}"
        address = self.socket.getsockname()
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        return f"http://{host}:{address[1]}"

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (in the calling thread, with its own event loop)."""
        self._serving = True
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self._done.set()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop serving; returns once :meth:`serve_forever` has (or after ``timeout_s``)."""
        self.server.should_exit = True
        if self._serving:
            self._done.wait(timeout_s)

    def server_close(self) -> None:
        self.socket.close()
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
