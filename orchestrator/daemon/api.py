"""The daemon's HTTP JSON API on loopback (standard library server, one thread per connection).

Who may read what: the job list, a job's document, the allocation, health, metrics and the
status page are open to whoever reaches the port (``squeue`` shows the queue to everyone too); a
job's output (it may hold secrets) and every change need ``Authorization: Bearer TOKEN``, the
token being readable by the daemon's owner only. The token is checked before the body is read,
so a request without a valid token changes nothing (401). Output is read only from a regular
file below the state folder, never through a link, a hard link or a FIFO a job put there (403).

Over TCP, a request whose ``Host`` is not one of the daemon's names (loopback names, the bound
address, an IP address, or a name given with ``--allow-host``) is refused with 421: a web page
that rebinds its own DNS name to 127.0.0.1 reads nothing. A body over the size limit is refused
unread (413). A malformed body, an unknown field or an impossible request is refused with 4xx
naming the field, and nothing is stored: the daemon validates everything before its one write
transaction. An ``Idempotency-Key`` sent again with another request is refused (409).
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import socket
import socketserver
import stat
import time
import traceback
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from orchestrator.daemon.service import Daemon
from orchestrator.daemon.spec import JobSpec, json_int
from orchestrator.daemon.views import job_document, layout, metrics_text, openapi_document
from orchestrator.exceptions import (
    IdempotencyKeyReusedError,
    InvalidRequestError,
    JobNotFoundError,
    JobStateError,
    OrchestratorError,
    StoreUnavailableError,
)
from orchestrator.scheduling.job import JobState

__all__ = ["MAX_BATCH", "MAX_BODY", "MAX_PAGE", "ApiServer", "UnixApiServer"]

MAX_BODY = 8 * 1024 * 1024
MAX_BATCH = 10_000
STORE_RETRY_AFTER_S = 5
"""Seconds a client is told to wait (``Retry-After``) when the store refuses writes."""
MAX_PAGE = 10_000
"""Most jobs in one listing; ``next_offset`` pages through the rest."""
WEB = Path(__file__).resolve().parent / "web"
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
log = logging.getLogger("orchestrator.daemon.api")


class ApiError(Exception):
    """An HTTP error with a JSON body (raised inside handlers only)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        example: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.field, self.example = status, code, field, example
        self.headers = headers or {}


class ApiServer(ThreadingHTTPServer):
    """The HTTP server of one daemon, on TCP (loopback by default).

    Args:
        daemon: The daemon whose jobs it serves.
        token: The bearer token every change must carry.
        host: Address to bind (loopback by default).
        port: Port (0: any free one; see :attr:`url`).
        allowed_hosts: Names accepted in the ``Host`` header besides ``localhost``, ``host``
            and IP addresses (which a DNS-rebinding page cannot send).
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(
        self,
        daemon: Daemon,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        self.daemon = daemon
        self.token = token.encode()
        self.started = time.time()
        self.host = host
        names = {"localhost", host, *allowed_hosts}
        self.allowed_hosts: frozenset[str] | None = frozenset(_host_name(n) for n in names)
        super().__init__((host, port), _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        # Replies go out as one write; without NODELAY, Nagle plus the client's delayed ACK
        # would add 40 ms to every request on a kept-alive connection.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server_address[1]}"


class UnixApiServer(socketserver.ThreadingUnixStreamServer):
    """The same API on a Unix socket, readable and writable by its owner only (0600), for
    machines where other users can reach loopback ports.

    Args:
        daemon: The daemon whose jobs it serves.
        token: The bearer token every change must carry.
        path: The socket file (replaced if it exists).
    """

    daemon_threads = True
    request_queue_size = 256
    allowed_hosts: frozenset[str] | None = None
    """Any ``Host``: a web page cannot reach a Unix socket."""

    def __init__(self, daemon: Daemon, token: str, path: Path) -> None:
        self.daemon = daemon
        self.token = token.encode()
        self.started = time.time()
        self.path = path
        path.unlink(missing_ok=True)
        old = os.umask(0o177)  # created 0600: no window with a wider mode
        try:
            super().__init__(str(path), _Handler)
        finally:
            os.umask(old)

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def server_close(self) -> None:
        super().server_close()
        self.path.unlink(missing_ok=True)


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer | UnixApiServer
    protocol_version = "HTTP/1.1"
    server_version = "orch"

    def address_string(self) -> str:
        # A Unix socket's peer has no address.
        return str(self.client_address[0]) if self.client_address else "unix"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # -- plumbing -----------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, doc: Any) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json")

    def _error(self, e: ApiError) -> None:
        doc: dict[str, Any] = {"code": e.code, "message": str(e)}
        if e.field is not None:
            doc["field"] = e.field
            doc["example"] = e.example
        if e.status == HTTPStatus.UNAUTHORIZED:
            self.send_response(e.status)
            body = json.dumps({"error": doc}).encode()
            self.send_header("WWW-Authenticate", 'Bearer realm="orch"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self._send(e.status, json.dumps({"error": doc}).encode(), "application/json", e.headers)
        if e.status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.REQUEST_ENTITY_TOO_LARGE):
            # The body was not read: the connection cannot carry another request.
            self.close_connection = True

    def _authorize(self) -> None:
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.server.token
        ):
            raise ApiError(
                HTTPStatus.UNAUTHORIZED,
                "unauthorized",
                "a valid 'Authorization: Bearer <token>' header is needed for changes and job "
                "output; the token is in the daemon's state folder (file 'token')",
            )

    def _check_host(self) -> None:
        """Refuse a ``Host`` that is not one of this daemon's names (DNS rebinding)."""
        allowed = self.server.allowed_hosts
        if allowed is None:
            return
        # No Host at all (HTTP/1.0): no browser sends such a request.
        for header in self.headers.get_all("Host") or ():
            name = _host_name(header)
            if name in allowed or _is_ip_address(name):
                continue
            address = self.server.server_address
            port = address[1] if isinstance(address, tuple) else 0
            raise ApiError(
                HTTPStatus.MISDIRECTED_REQUEST,
                "misdirected",
                f"Host {header[:100]!r} is not a name of this daemon, so the request may come "
                "from a web page that rebound its own name to this address; use "
                f"http://127.0.0.1:{port}/, or start the daemon with --allow-host NAME to "
                "accept another name",
                field="Host",
                example=f"127.0.0.1:{port}",
            )

    def _body(self) -> Any:
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "length_required", "Content-Length needed")
        try:
            length = int(length_text)
        except ValueError:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_length", "bad Content-Length") from None
        if length < 0 or length > MAX_BODY:
            raise ApiError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "too_large",
                f"body of {length} bytes exceeds the limit of {MAX_BODY} bytes",
                field="body",
                example="split the jobs into several batches",
            )
        raw = self.rfile.read(length)
        self._body_read = True
        try:
            # An integer too long for any field is kept as text and refused naming its field.
            return json.loads(raw, parse_int=json_int)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                "malformed_json",
                f"the body is not valid JSON: {e}",
                field="body",
                example='{"argv": ["true"], "nodes": 1}',
            ) from None

    def _dispatch(self, method: str) -> None:
        self._body_read = False
        try:
            self._dispatch_inner(method)
        finally:
            if not self._body_read and int(self.headers.get("Content-Length") or 0) > 0:
                # An unread body would be parsed as the next request: end the connection.
                self.close_connection = True

    def _dispatch_inner(self, method: str) -> None:
        try:
            try:
                self._route(method)
            except InvalidRequestError as e:
                raise ApiError(
                    HTTPStatus.UNPROCESSABLE_ENTITY, "invalid_field", str(e), e.field, e.example
                ) from e
            except JobNotFoundError as e:
                raise ApiError(HTTPStatus.NOT_FOUND, "not_found", str(e)) from e
            except IdempotencyKeyReusedError as e:
                raise ApiError(
                    HTTPStatus.CONFLICT,
                    "idempotency_key_reused",
                    str(e),
                    field="Idempotency-Key",
                    example="a new key for each new request, e.g. a UUID",
                ) from e
            except JobStateError as e:
                raise ApiError(HTTPStatus.CONFLICT, "wrong_state", str(e)) from e
            except StoreUnavailableError as e:
                # Nothing was stored: the same request may be sent again (idempotency key).
                raise ApiError(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    f"{e}; nothing was changed, retry later",
                    headers={"Retry-After": str(STORE_RETRY_AFTER_S)},
                ) from e
            except OrchestratorError as e:
                raise ApiError(HTTPStatus.BAD_REQUEST, "rejected", str(e)) from e
        except ApiError as e:
            self._error(e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # the request fails, the daemon does not
            log.error("internal error on %s %s\n%s", method, self.path, traceback.format_exc())
            self._error(ApiError(500, "internal", "internal error (see the daemon log)"))

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- routes -------------------------------------------------------------------------------

    def _route(self, method: str) -> None:
        self._check_host()
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        daemon = self.server.daemon
        if method == "POST":
            self._authorize()
            if parts == ["api", "v1", "jobs"]:
                return self._submit(batch=False)
            if parts == ["api", "v1", "jobs", "batch"]:
                return self._submit(batch=True)
            if len(parts) == 5 and parts[:3] == ["api", "v1", "jobs"]:
                job_id = _job_id(parts[3])
                action = {"cancel": daemon.cancel, "hold": daemon.hold, "release": daemon.release}
                if parts[4] in action:
                    if int(self.headers.get("Content-Length") or 0):
                        self._body()  # an action takes no fields, but the body must be valid
                    state = action[parts[4]](job_id)
                    return self._json(HTTPStatus.OK, {"id": job_id, "state": state.value})
            raise ApiError(HTTPStatus.NOT_FOUND, "no_route", f"no POST route {url.path}")
        if method != "GET":
            self._authorize()
            raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, "method", f"{method} is not supported")
        if url.path in _STATIC:
            name, content_type = _STATIC[url.path]
            return self._send(HTTPStatus.OK, (WEB / name).read_bytes(), content_type)
        if parts == ["metrics"]:
            return self._send(HTTPStatus.OK, self._metrics().encode(), "text/plain; version=0.0.4")
        if parts[:2] != ["api", "v1"]:
            raise ApiError(HTTPStatus.NOT_FOUND, "no_route", f"no route {url.path}")
        rest = parts[2:]
        if rest == ["health"]:
            return self._json(HTTPStatus.OK, self._health())
        if rest == ["openapi.json"]:
            return self._json(HTTPStatus.OK, openapi_document())
        if rest == ["jobs"]:
            limit = min(_int_param(query, "limit") or MAX_PAGE, MAX_PAGE)
            offset = _int_param(query, "offset") or 0
            page = self._list(query, limit, offset)
            more = offset + len(page) if len(page) == limit else None
            return self._json(HTTPStatus.OK, {"jobs": page, "next_offset": more})
        if rest == ["nodes"]:
            return self._json(HTTPStatus.OK, layout(daemon.cluster, daemon.node_owners()))
        if rest == ["status"]:
            return self._json(HTTPStatus.OK, self._status())
        if len(rest) == 2 and rest[0] == "jobs":
            return self._json(HTTPStatus.OK, self._show(_job_id(rest[1])))
        if len(rest) == 3 and rest[0] == "jobs" and rest[2] == "output":
            self._authorize()  # output may hold secrets: the daemon's owner only
            return self._json(HTTPStatus.OK, self._output(_job_id(rest[1]), query))
        raise ApiError(HTTPStatus.NOT_FOUND, "no_route", f"no route {url.path}")

    def _submit(self, *, batch: bool) -> None:
        key = self.headers.get("Idempotency-Key")
        if key is not None and not 0 < len(key) <= 100:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad_key", "Idempotency-Key: 1-100 characters")
        body = self._body()
        daemon = self.server.daemon
        now = daemon.clock()
        if batch:
            if not isinstance(body, dict) or set(body) != {"jobs"}:
                raise InvalidRequestError(
                    "jobs",
                    body if not isinstance(body, dict) else sorted(body),
                    "expected an object with exactly one field, jobs",
                    '{"jobs": [...]}',
                )
            items = body["jobs"]
            if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
                raise InvalidRequestError(
                    "jobs",
                    type(items).__name__,
                    f"expected a list of 1 to {MAX_BATCH} jobs",
                    '{"jobs": [...]}',
                )
            specs = [JobSpec.from_mapping(item, f"jobs[{i}].", now) for i, item in enumerate(items)]
        else:
            specs = [JobSpec.from_mapping(body, "", now)]
        # The key stands for this request: sent again with another one, it is refused (409).
        fingerprint = _fingerprint("batch" if batch else "job", body) if key is not None else None
        ids = daemon.submit(specs, idempotency_key=key, fingerprint=fingerprint)
        if batch:
            return self._json(HTTPStatus.CREATED, {"job_ids": ids})
        return self._json(HTTPStatus.CREATED, {"job_ids": ids[0]})

    def _nodelist(self, job_id: int) -> list[str]:
        daemon = self.server.daemon
        job = daemon.active.get(job_id) or daemon.draining.get(job_id)
        # One read of the block: the tick thread may clear it meanwhile.
        block = job.block if job is not None else None
        if block is None:
            return []
        names = daemon.cluster.topology.node_names
        return [names[int(n)] for n in block.nodes]

    def _list(self, query: dict[str, str], limit: int, offset: int) -> list[dict[str, Any]]:
        _known(query, ("state", "user", "name", "array_id", "limit", "offset"))
        states = None
        if "state" in query:
            states = [s.strip().upper() for s in query["state"].split(",") if s.strip()]
            for s in states:
                if s not in JobState.__members__:
                    raise InvalidRequestError("state", s, "unknown state", "PENDING,RUNNING")
        rows = self.server.daemon.store.list_jobs(
            states=states,
            user=query.get("user"),
            name=query.get("name"),
            array_id=_int_param(query, "array_id"),
            limit=limit,
            offset=offset,
        )
        return [self._document(r) for r in rows]

    def _document(self, row: dict[str, Any]) -> dict[str, Any]:
        doc = job_document(row, self._nodelist(row["id"]))
        if row["state"] in ("PENDING", "HELD"):
            doc["reason"] = self.server.daemon.pending_reason(row["id"]) or doc["reason"]
        return doc

    def _show(self, job_id: int) -> dict[str, Any]:
        store = self.server.daemon.store
        row = store.get_job(job_id)
        doc = job_document(row, self._nodelist(job_id), store.events_of(job_id))
        doc["allocations"] = [
            {
                "attempt": a["attempt"],
                "node": a["node_name"],
                "allocated_at": a["allocated_at"],
                "released_at": a["released_at"],
            }
            for a in store.allocation_history(job_id)
        ]
        paths = self.server.daemon.backend.output_paths(job_id)
        doc["stdout"], doc["stderr"] = paths if paths else (None, None)
        return doc

    def _output(self, job_id: int, query: dict[str, str]) -> dict[str, Any]:
        daemon = self.server.daemon
        _known(query, ("stream", "offset", "limit"))
        stream = query.get("stream", "stdout")
        if stream not in ("stdout", "stderr"):
            raise InvalidRequestError("stream", stream, "stdout or stderr", "stdout")
        row = daemon.store.get_job(job_id)
        offset = _int_param(query, "offset") or 0
        limit = min(_int_param(query, "limit") or 65536, 1024 * 1024)
        paths = daemon.backend.output_paths(job_id)
        data = b""
        if paths is not None:
            path = Path(paths[0] if stream == "stdout" else paths[1])
            # Every backend with output on this machine keeps it below its root, the state folder.
            root = getattr(daemon.backend, "root", None)
            data = _read_output(
                path, root if isinstance(root, Path) else path.parent, offset, limit
            )
        finished = JobState(row["state"]).is_finished
        return {
            "data": data.decode(errors="replace"),
            "offset": offset + len(data),
            "finished": finished,
            "state": row["state"],
        }

    def _health(self) -> dict[str, Any]:
        daemon = self.server.daemon
        fault = daemon.store_fault
        return {
            # Degraded: reads are served, changes answer 503 until the store takes writes.
            "status": "ok" if fault is None else "degraded",
            "store_fault": fault,
            "pid": os.getpid(),
            "cluster": daemon.cluster.name,
            "nodes": daemon.cluster.size,
            "uptime_s": time.time() - self.server.started,
            "ticks": daemon.ticks,
            "store": daemon.store.engine.dialect.name,
        }

    def _metrics(self) -> str:
        daemon = self.server.daemon
        owners = daemon.node_owners()
        gauges = {
            "orch_nodes": ("Nodes in the cluster.", float(daemon.cluster.size)),
            "orch_nodes_allocated": (
                "Nodes held by jobs.",
                float(sum(o is not None for o in owners)),
            ),
            "orch_queue_waiting": (
                "Jobs waiting in the daemon's queue.",
                float(len(daemon.waiting)),
            ),
            "orch_jobs_started_total": (
                "Jobs started since the daemon started.",
                float(daemon.started_total),
            ),
            "orch_scheduler_ticks_total": ("Scheduler ticks since start.", float(daemon.ticks)),
            "orch_tick_seconds": ("Duration of the last tick.", daemon.last_tick_s),
        }
        return metrics_text(daemon.store.count_by_state(), gauges, list(JobState.__members__))

    def _status(self) -> dict[str, Any]:
        daemon = self.server.daemon
        store = daemon.store
        queue = store.list_jobs(states=["PENDING", "HELD"], limit=200)
        running = store.list_jobs(states=["STARTING", "RUNNING"], limit=500)
        return {
            "cluster": daemon.cluster.name,
            "time": time.time(),
            "counts": store.count_by_state(),
            "queue": [self._document(r) for r in queue],
            "running": [job_document(r, self._nodelist(r["id"])) for r in running],
            "layout": layout(daemon.cluster, daemon.node_owners()),
        }


_NUMBER = re.compile(r"[0-9]{1,18}")
"""A number in a path or query: ASCII digits only (``str.isdigit`` takes ``²``, ``int`` takes
``٣``), and few enough of them for a 64-bit column and a file offset."""


def _job_id(text: str) -> int:
    if not _NUMBER.fullmatch(text):
        raise InvalidRequestError("job_id", text, "must be a job number", "12")
    return int(text)


def _int_param(query: dict[str, str], name: str) -> int | None:
    if name not in query:
        return None
    text = query[name]
    if not _NUMBER.fullmatch(text):
        raise InvalidRequestError(name, text, "must be a non-negative integer", "10")
    return int(text)


def _host_name(header: str) -> str:
    """The name of a ``Host`` header, lower case, without port, brackets or final dot."""
    text = header.strip().lower()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # one colon: name:port (more: a bare IPv6 address)
        text = text.partition(":")[0]
    return text.rstrip(".")


def _is_ip_address(name: str) -> bool:
    """Whether ``name`` is an IP address: a DNS-rebinding page sends its own name, never one."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _fingerprint(route: str, body: Any) -> str:
    """What an idempotency key stands for: the route and the decoded body (key order and
    spacing aside)."""
    text = json.dumps([route, body], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _read_output(path: Path, root: Path, offset: int, limit: int) -> bytes:
    """At most ``limit`` bytes at ``offset`` of a job's output file below ``root``.

    Each folder from ``root`` down and the file itself are opened without following a link
    (``O_NOFOLLOW``, one component at a time, so a link swapped in meanwhile is refused too), and
    the file must be a regular file with one name: a job cannot make the daemon serve the token
    or another file by putting a symbolic link, a hard link or a FIFO in its output's place.

    Raises:
        ApiError: 403, the path is not such a file.
    """
    refused = ApiError(
        HTTPStatus.FORBIDDEN,
        "output_refused",
        f"{path} is not a regular file of the job's own (it is, or lies behind, a link, a hard "
        "link or a FIFO, likely put there by the job): the daemon serves output only from the "
        "files it made",
    )
    parts = path.relative_to(root).parts if path.is_relative_to(root) else ()
    if not parts or os.pardir in parts:
        raise refused
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    try:
        for name in parts[:-1]:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            inner = os.open(name, flags, dir_fd=fd)
            os.close(fd)
            fd = inner
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        inner = os.open(parts[-1], flags, dir_fd=fd)
        os.close(fd)
        fd = inner
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            raise refused
        # Past the end there is nothing (yet); never seek there (lseek refuses huge offsets).
        return os.pread(fd, limit, offset) if offset < info.st_size else b""
    except FileNotFoundError:
        return b""  # not written yet
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise refused from None
        raise
    finally:
        os.close(fd)


def _known(query: dict[str, str], names: tuple[str, ...]) -> None:
    for key, value in query.items():
        if key not in names:
            raise InvalidRequestError(
                key, value, f"unknown query parameter (known: {', '.join(names)})", names[0]
            )
