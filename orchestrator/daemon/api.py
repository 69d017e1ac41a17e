"""The daemon's HTTP JSON API: a FastAPI application (served by :mod:`.listener`).

Who may read what (:mod:`.access` says who is asking): the job list, a job's document, the
allocation, health, metrics and the status page are open to whoever reaches the daemon
(``squeue`` shows the queue to everyone too); a job's output (it may hold secrets) and every
change need an authenticated caller, and a caller who is not the daemon's owner may touch their
own jobs only (403). The caller is authenticated before the body is read, so a request without a
valid token changes nothing (401). Output is read only from a regular file below the state
folder, never through a link, a hard link or a FIFO a job put there (403).

Over TCP, a request whose ``Host`` is not one of the daemon's names is refused with 421 (DNS
rebinding). A malformed body, an unknown field or an impossible request is refused with 4xx
naming the field, and nothing is stored: the daemon validates everything before its one write
transaction. An ``Idempotency-Key`` sent again with another request is refused (409). A store
that refuses writes is 503 with ``Retry-After``. Every error body is
``{"error": {"code", "message", "field", "example"}}``.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import ipaddress
import json
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, BeforeValidator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.daemon.access import Access, Caller
from orchestrator.daemon.api_documents import API_VERSION, display_id, job_document, layout
from orchestrator.daemon.models import (
    ActionResult,
    BatchSubmission,
    ErrorBody,
    Health,
    JobDocument,
    JobList,
    JobSubmission,
    Layout,
    OutputSlice,
    Status,
    SubmitResult,
)
from orchestrator.daemon.service import Daemon
from orchestrator.daemon.spec import JobSpec, ascii_digits, json_int
from orchestrator.exceptions import (
    IdempotencyKeyReusedError,
    InvalidRequestError,
    JobNotFoundError,
    JobStateError,
    OrchestratorError,
    StoreUnavailableError,
)
from orchestrator.scheduling.job import JobState

__all__ = [
    "MAX_PAGE",
    "STORE_RETRY_AFTER_S",
    "ApiLimits",
    "Guard",
    "HttpError",
    "create_app",
    "error_document",
]

T = TypeVar("T")
STORE_RETRY_AFTER_S = 5
"""Seconds a client is told to wait (``Retry-After``) when the store refuses writes."""
MAX_PAGE = 10_000
"""Most jobs in one listing; ``next_offset`` pages through the rest."""
QUEUE_FULL_RETRY_AFTER_S = 30
INLINE_BODY_BYTES = 4096
"""Submissions up to this size (a few jobs) are stored from the event loop (see under_lock)."""
WEB = Path(__file__).resolve().parent / "web"
log = logging.getLogger("orchestrator.daemon.api")


@dataclass(frozen=True)
class ApiLimits:
    """What one client may ask of the daemon; each answered with a status and a message.

    The defaults are sized for a research group's daemon on a login node: far above what the
    CLI, the Hydra launcher or a sweep sends, far below what exhausts the daemon's memory or file
    descriptors (a 1,024-descriptor default ``ulimit -n``).

    Attributes:
        max_body_bytes: Largest request body (413): 8 MiB holds a batch of 10,000 jobs with
            commands of 800 bytes each.
        max_jobs_per_request: Most jobs one request creates, array elements counted (413):
            10,000, Slurm's default ``MaxJobCount`` for a whole cluster.
        max_queued_jobs: Most jobs waiting in the queue (429 with ``Retry-After``): 100,000, about
            130 MB of the daemon's memory.
        max_connections: Open connections (256). A connection beyond it closes the connection
            idle the longest; when all are busy, it is answered 503 with ``Retry-After``.
        idle_timeout_s: A connection that sends nothing for this long is closed (5 s, uvicorn's
            keep-alive default), also before its first request.
        request_timeout_s: Headers and body of one request must arrive within this (10 s:
            8 MiB takes milliseconds on a local network), else 408.
        max_header_bytes: Largest request line plus headers (16 KiB; 431 beyond).
    """

    max_body_bytes: int = 8 * 1024 * 1024
    max_jobs_per_request: int = 10_000
    max_queued_jobs: int = 100_000
    max_connections: int = 256
    idle_timeout_s: float = 5.0
    request_timeout_s: float = 10.0
    max_header_bytes: int = 16 * 1024


class HttpError(Exception):
    """An error the API replies with: its HTTP status and the API's error body (a client sees it
    as :class:`orchestrator.daemon.client.ApiError`)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        example: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.field, self.example = status, code, field, example
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return error_response(
            self.status, self.code, str(self), self.field, self.example, self.headers
        )


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None,
    example: str = "",
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_document(code, message, field, example), status, dict(headers or {}))


def error_document(code: str, message: str, field: str | None, example: str = "") -> dict[str, Any]:
    """The body of every error the API answers (the listener's too)."""
    return {"error": {"code": code, "message": message, "field": field, "example": example}}


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (401, "No valid bearer token (changes, job output)"),
        (403, "Not the caller's job, or output that is a link"),
        (404, "No such job"),
        (409, "Wrong state, or Idempotency-Key used for another request"),
        (413, "Body or jobs over the limit"),
        (421, "Host is not a name of this daemon (DNS rebinding)"),
        (422, "Invalid field, parameter or header"),
        (429, "Queue full"),
        (503, "The store refuses writes (Retry-After)"),
    )
}


# -- the guard in front of every route ---------------------------------------------------------


class Guard:
    """Checks what needs no route: the ``Host`` header, the declared body size, and the body
    actually received (a chunked body has no length to check first). Pure ASGI: no cost per
    request beyond these checks."""

    def __init__(
        self, app: ASGIApp, allowed_hosts: frozenset[str] | None, max_body_bytes: int
    ) -> None:
        self.app = app
        self.allowed_hosts = allowed_hosts
        self.max_body_bytes = max_body_bytes
        self.in_flight = 0
        """Requests being answered (the event loop's own count: no lock needed)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._check(scope)
        if refusal is not None:
            await refusal.response()(scope, receive, send)
            return
        limit = self.max_body_bytes
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(received, limit)
            return message

        self.in_flight += 1
        try:
            await self.app(scope, counted, send)
        finally:
            self.in_flight -= 1

    def _check(self, scope: Scope) -> HttpError | None:
        length: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"host" and self.allowed_hosts is not None:
                text = value.decode("latin-1")
                host = host_name(text)
                if host not in self.allowed_hosts and not _is_ip_address(host):
                    server = scope.get("server") or ("127.0.0.1", 0)
                    return HttpError(
                        HTTPStatus.MISDIRECTED_REQUEST,
                        "misdirected",
                        f"Host {text[:100]!r} is not a name of this daemon, so the request may "
                        "come from a web page that rebound its own name to this address; use "
                        f"http://127.0.0.1:{server[1]}/, or start the daemon with --allow-host "
                        "NAME to accept another name",
                        field="Host",
                        example=f"127.0.0.1:{server[1]}",
                    )
            elif name == b"content-length":
                length = value
        if length is not None:
            if not (length.isdigit() and len(length) <= 18):
                return HttpError(
                    HTTPStatus.BAD_REQUEST, "bad_length", "bad Content-Length", "Content-Length"
                )
            if int(length) > self.max_body_bytes:
                return _too_large(int(length), self.max_body_bytes)
        return None


def _too_large(size: int, limit: int) -> HttpError:
    return HttpError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        "too_large",
        f"body of {size} bytes exceeds the limit of {limit} bytes (the daemon's --max-body-bytes)",
        field="body",
        example="split the jobs into several batches",
        # The rest of the body is not read: the connection cannot carry another request.
        headers={"Connection": "close"},
    )


def host_name(header: str) -> str:
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


_bearer = HTTPBearer(auto_error=False, description="The token of the daemon or of a user.")


async def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    """Who sent ``request``: a bearer token, or in shared mode the Unix socket's peer (401)."""
    access: Access = request.app.state.access
    if credentials is not None:
        found = access.from_token(credentials.credentials.strip())
        if found is not None:
            return found
    peer = request.scope.get("state", {}).get("peer")
    if peer is not None and access.shared:
        # Shared mode's socket: the kernel says who connected (pid, uid, gid).
        found = access.from_peer(peer[1], peer[2])
        if found is not None:
            return found
    raise HttpError(
        HTTPStatus.UNAUTHORIZED,
        "unauthorized",
        "a valid 'Authorization: Bearer <token>' header is needed for changes and job "
        "output; the token is in the daemon's state folder (file 'token')",
        field="Authorization",
        example="Bearer <token>",
        headers={"WWW-Authenticate": 'Bearer realm="orch"'},
    )


Authenticated = Annotated[Caller, Depends(_caller)]


def _ascii_digits(value: Any) -> Any:
    """A number in a path or query is ASCII digits only: pydantic's lax integers take ``0.0``
    and ``1_000``, Python's ``int`` takes ``٣``."""
    if isinstance(value, str) and not ascii_digits(value, 19):
        raise ValueError("expected a non-negative integer of ASCII digits")
    return value


_Digits = BeforeValidator(_ascii_digits)
JobId = Annotated[int, _Digits, PathParam(ge=0, lt=2**62, description="A job number.")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=100,
        description="Sent again with the same request, returns the first ids.",
    ),
]
Count = Annotated[int | None, _Digits, Query(ge=0, le=10**18)]
Seconds = Annotated[
    float | None, Query(ge=0, le=1e11, description="Epoch seconds", examples=[1796601600])
]


# -- the application ---------------------------------------------------------------------------


def create_app(
    daemon: Daemon,
    access: Access,
    *,
    limits: ApiLimits | None = None,
    allowed_hosts: Iterable[str] | None = None,
) -> ASGIApp:
    """The API of ``daemon`` as an ASGI application.

    Args:
        daemon: The daemon whose jobs it serves.
        access: Who is asking (tokens, shared mode).
        limits: Body, jobs and queue limits (the connection limits are the listener's).
        allowed_hosts: Names accepted in ``Host`` besides IP addresses; None: any (a Unix
            socket, which no web page can reach).
    """
    limits = limits or ApiLimits()
    app = FastAPI(
        title="orchestrator daemon",
        version=API_VERSION,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # Swagger's page loads its scripts from a CDN: not on a compute site
        redoc_url=None,
    )
    app.state.access = access
    hosts = None if allowed_hosts is None else frozenset(host_name(h) for h in allowed_hosts)
    guard = Guard(app, hosts, limits.max_body_bytes)
    service = _Service(daemon, limits, guard)
    _install_error_handlers(app)
    _add_change_routes(app, service)
    _add_job_routes(app, service)
    _add_cluster_routes(app, service)
    _add_pages(app)
    return guard


class _Service:
    """What the routes do, over one daemon: the routes parse and answer; this calls the daemon
    where it should run (the event loop, or a worker thread)."""

    def __init__(self, daemon: Daemon, limits: ApiLimits, guard: Guard) -> None:
        self.daemon = daemon
        self.limits = limits
        self.guard = guard
        self.started = time.time()
        # The daemon's calls block (store, lock): they run in these threads, so a slow write
        # never holds up the event loop, and one hop costs less than anyio's (run_in_threadpool).
        self.workers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="api")

    async def blocking(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        call = functools.partial(function, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self.workers, call)

    async def under_lock(
        self, function: Callable[..., T], *args: Any, small: bool, **kwargs: Any
    ) -> T:
        """A change (it takes the daemon's lock). A small one, when no other request is being
        answered and the lock is free, runs in the event loop: a submission takes about 0.4 ms,
        and the hop to a thread and back 0.1 ms more. Otherwise it runs in a worker thread, so
        that the loop reads the next requests while this one waits for the lock or the store
        (which give up the GIL): large changes, concurrent clients, a busy tick."""
        daemon = self.daemon
        if small and self.guard.in_flight <= 1 and daemon.lock.acquire(blocking=False):
            try:
                return function(*args, **kwargs)
            finally:
                daemon.lock.release()
        return await self.blocking(function, *args, **kwargs)

    def offloaded(self, function: Callable[..., T]) -> Callable[..., Awaitable[T]]:
        """A reading endpoint run in the workers (FastAPI runs a plain one in anyio's threads,
        a dearer hop); the signature FastAPI reads is the function's."""

        @functools.wraps(function)
        async def endpoint(*args: Any, **kwargs: Any) -> T:
            return await self.blocking(function, *args, **kwargs)

        return endpoint

    # -- changes --------------------------------------------------------------------------------

    def _specs(self, body: Any, who: Caller, *, batch: bool) -> list[JobSpec]:
        now = self.daemon.clock()
        most = self.limits.max_jobs_per_request
        if not batch:
            return [JobSpec.from_mapping(body, "", now).filed_under(who.name)]
        if not isinstance(body, dict) or set(body) != {"jobs"}:
            raise InvalidRequestError(
                "jobs",
                body if not isinstance(body, dict) else sorted(body),
                "expected an object with exactly one field, jobs",
                '{"jobs": [...]}',
            )
        items = body["jobs"]
        if not isinstance(items, list) or not 1 <= len(items) <= most:
            raise InvalidRequestError(
                "jobs",
                type(items).__name__,
                f"expected a list of 1 to {most} jobs",
                '{"jobs": [...]}',
            )
        return [
            JobSpec.from_mapping(item, f"jobs[{i}].", now).filed_under(who.name)
            for i, item in enumerate(items)
        ]

    def _check_room(self, count: int, *, batch: bool) -> None:
        limits = self.limits
        if count > limits.max_jobs_per_request:
            raise HttpError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                "too_many_jobs",
                f"the request makes {count} jobs (array elements counted), over the limit of "
                f"{limits.max_jobs_per_request} per request (the daemon's --max-jobs-per-request)",
                field="jobs" if batch else "array",
                example="several requests, or a smaller array with a %N limit",
            )
        waiting = len(self.daemon.waiting)
        if waiting + count > limits.max_queued_jobs:
            raise HttpError(
                HTTPStatus.TOO_MANY_REQUESTS,
                "queue_full",
                f"the queue holds {waiting} jobs; {count} more would pass its limit of "
                f"{limits.max_queued_jobs} (the daemon's --max-queued-jobs): retry once jobs end",
                field="jobs" if batch else "array",
                example="fewer jobs at once",
                headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)},
            )

    def submit(self, body: Any, key: str | None, who: Caller, *, batch: bool) -> list[list[int]]:
        specs = self._specs(body, who, batch=batch)
        self._check_room(
            sum(len(s.array.indices) if s.array is not None else 1 for s in specs), batch=batch
        )
        # The key stands for this request: sent again with another one, it is refused (409).
        fingerprint = _fingerprint("batch" if batch else "job", body) if key is not None else None
        return self.daemon.submit(specs, idempotency_key=key, fingerprint=fingerprint)

    async def submission(
        self, request: Request, who: Caller, key: str | None, *, batch: bool
    ) -> JSONResponse:
        raw = await request.body()
        body = _parse_json(raw)
        small = len(raw) <= INLINE_BODY_BYTES
        ids = await self.under_lock(self.submit, body, key, who, batch=batch, small=small)
        return JSONResponse({"job_ids": ids if batch else ids[0]}, HTTPStatus.CREATED)

    def act(self, action: str, job_id: int, who: Caller) -> JSONResponse:
        daemon = self.daemon
        row = daemon.store.get_job(job_id)
        _check_owner(who, row, job_id)
        change = {"cancel": daemon.cancel, "hold": daemon.hold, "release": daemon.release}[action]
        return JSONResponse({"id": job_id, "state": change(job_id).value})

    # -- reads ----------------------------------------------------------------------------------

    def nodelist(self, job_id: int) -> list[str]:
        daemon = self.daemon
        job = daemon.active.get(job_id) or daemon.draining.get(job_id)
        # One read of the block: the tick thread may clear it meanwhile.
        block = job.block if job is not None else None
        if block is None:
            return []
        names = daemon.cluster.topology.node_names
        return [names[int(n)] for n in block.nodes]

    def document(self, row: dict[str, Any]) -> dict[str, Any]:
        doc = job_document(row, self.nodelist(row["id"]))
        if row["state"] in ("PENDING", "HELD"):
            doc["reason"] = self.daemon.pending_reason(row["id"]) or doc["reason"]
        return doc

    def job_with_history(self, job_id: int) -> dict[str, Any]:
        daemon = self.daemon
        store = daemon.store
        row = store.get_job(job_id)
        doc = job_document(row, self.nodelist(job_id), store.events_of(job_id))
        doc["allocations"] = [
            {
                "attempt": a["attempt"],
                "node": a["node_name"],
                "allocated_at": a["allocated_at"],
                "released_at": a["released_at"],
            }
            for a in store.allocation_history(job_id)
        ]
        paths = daemon.backend.output_paths(job_id)
        doc["stdout"], doc["stderr"] = paths if paths else (None, None)
        return doc

    def read_output(
        self, job_id: int, who: Caller, stream: str, offset: int, limit: int
    ) -> JSONResponse:
        daemon = self.daemon
        row = daemon.store.get_job(job_id)
        _check_owner(who, row, job_id)
        paths = daemon.backend.output_paths(job_id)
        data = b""
        if paths is not None:
            path = Path(paths[0] if stream == "stdout" else paths[1])
            # Every backend with output on this machine keeps it below its root, the state folder.
            root = getattr(daemon.backend, "root", None)
            data = _read_output(
                path, root if isinstance(root, Path) else path.parent, offset, limit
            )
        return JSONResponse(
            {
                "data": data.decode(errors="replace"),
                "offset": offset + len(data),
                "finished": JobState(row["state"]).is_finished,
                "state": row["state"],
            }
        )

    def layout(self) -> dict[str, Any]:
        """Who holds each node, array elements named as ``orch queue`` names them."""
        daemon = self.daemon
        owners = daemon.node_owners()
        usage = daemon.node_usage()
        on_shared_nodes = (j for node in usage or () for j in node["jobs"])
        holders = sorted({o for o in owners if o is not None} | set(on_shared_nodes))
        rows = daemon.store.list_jobs(ids=holders) if holders else []
        labels = {r["id"]: display_id(r) for r in rows if r["array_id"] is not None}
        users = {r["id"]: r["user"] for r in rows}
        return layout(daemon.cluster, owners, labels, usage, users)

    def health(self) -> dict[str, Any]:
        daemon = self.daemon
        fault = daemon.store_fault
        engine = daemon.engine_fault
        return {
            # Degraded: reads are served, changes answer 503 until the store takes writes; or
            # the engine does not answer, and no job starts or is seen to end.
            "status": "ok" if fault is None and engine is None else "degraded",
            "store_fault": fault,
            "engine_fault": engine,
            "pid": os.getpid(),
            "cluster": daemon.cluster.name,
            "nodes": daemon.cluster.size,
            "uptime_s": time.time() - self.started,
            "ticks": daemon.ticks,
            "store": daemon.store.engine.dialect.name,
        }

    def status(self) -> dict[str, Any]:
        daemon = self.daemon
        store = daemon.store
        queue = store.list_jobs(states=["PENDING", "HELD"], limit=200)
        running = store.list_jobs(states=["STARTING", "RUNNING"], limit=500)
        return {
            "cluster": daemon.cluster.name,
            "time": time.time(),
            "engine_fault": daemon.engine_fault,
            "counts": store.count_by_state(),
            "queue": [self.document(r) for r in queue],
            "running": [job_document(r, self.nodelist(r["id"])) for r in running],
            "layout": self.layout(),
        }


def _add_change_routes(app: FastAPI, service: _Service) -> None:
    body_doc = _body_schema(app)

    @app.post(
        "/api/v1/jobs",
        status_code=201,
        response_model=SubmitResult,
        responses=_ERROR_RESPONSES,
        summary="Submit one job or one array (field array)",
        openapi_extra=body_doc("JobSubmission"),
    )
    async def submit_one(
        request: Request, who: Authenticated, key: IdempotencyKey = None
    ) -> JSONResponse:
        return await service.submission(request, who, key, batch=False)

    @app.post(
        "/api/v1/jobs/batch",
        status_code=201,
        response_model=SubmitResult,
        responses=_ERROR_RESPONSES,
        summary="Submit many jobs atomically (all or none)",
        openapi_extra=body_doc("BatchSubmission"),
    )
    async def submit_batch(
        request: Request, who: Authenticated, key: IdempotencyKey = None
    ) -> JSONResponse:
        return await service.submission(request, who, key, batch=True)

    def route(action: str) -> Callable[..., Awaitable[JSONResponse]]:
        async def change(request: Request, job_id: JobId, who: Authenticated) -> JSONResponse:
            raw = await request.body()
            if raw:
                _parse_json(raw)  # an action takes no fields, but the body must be JSON
            return await service.under_lock(service.act, action, job_id, who, small=True)

        return change

    for action in ("cancel", "hold", "release"):
        app.post(
            f"/api/v1/jobs/{{job_id}}/{action}",
            response_model=ActionResult,
            responses=_ERROR_RESPONSES,
            summary=f"{action.capitalize()} a job",
            name=action,
        )(route(action))


def _add_job_routes(app: FastAPI, service: _Service) -> None:
    daemon = service.daemon

    @app.get(
        "/api/v1/jobs",
        response_model=JobList,
        responses=_ERROR_RESPONSES,
        summary="List and filter jobs (pages of at most 10,000: next_offset)",
    )
    @service.offloaded
    def list_jobs(
        request: Request,
        state: Annotated[str | None, Query(max_length=200, examples=["PENDING,RUNNING"])] = None,
        user: Annotated[str | None, Query(max_length=128)] = None,
        name: Annotated[str | None, Query(max_length=256)] = None,
        partition: Annotated[str | None, Query(max_length=128)] = None,
        array_id: Count = None,
        ended_after: Seconds = None,
        ended_before: Seconds = None,
        limit: Count = None,
        offset: Count = None,
    ) -> JSONResponse:
        _known(
            request,
            (
                "state",
                "user",
                "name",
                "partition",
                "array_id",
                "ended_after",
                "ended_before",
                "limit",
                "offset",
            ),
        )
        states = None if state is None else _states(state)
        page_size = min(limit or MAX_PAGE, MAX_PAGE)
        start = offset or 0
        rows = daemon.store.list_jobs(
            states=states,
            user=user,
            name=name,
            partition=partition,
            array_id=array_id,
            ended_after=ended_after,
            ended_before=ended_before,
            limit=page_size,
            offset=start,
        )
        page = [service.document(r) for r in rows]
        more = start + len(page) if len(page) == page_size else None
        return JSONResponse({"jobs": page, "next_offset": more})

    @app.get(
        "/api/v1/jobs/{job_id}",
        response_model=JobDocument,
        responses=_ERROR_RESPONSES,
        summary="A job with its events",
    )
    async def show_job(request: Request, job_id: JobId) -> JSONResponse:
        # In the event loop: one job's rows take less than the hop to a worker and back (and
        # clients poll this route), and it takes no lock.
        _known(request, ())
        doc = service.job_with_history(job_id)
        if doc["state"] in ("PENDING", "HELD"):
            # Why it waits, as orch queue says it: that takes the daemon's lock, so a worker
            # waits for it while a tick holds it, not the event loop.
            reason = await service.blocking(daemon.pending_reason, job_id)
            doc["reason"] = reason or doc["reason"]
        return JSONResponse(doc)

    @app.get(
        "/api/v1/jobs/{job_id}/output",
        response_model=OutputSlice,
        responses=_ERROR_RESPONSES,
        summary="A slice of the job's stdout or stderr (its owner and the daemon's owner only)",
    )
    async def output(
        request: Request,
        job_id: JobId,
        who: Authenticated,
        stream: Annotated[str, Query(pattern="^(stdout|stderr)$")] = "stdout",
        offset: Count = None,
        limit: Count = None,
    ) -> JSONResponse:
        _known(request, ("stream", "offset", "limit"))
        size = min(limit or 65536, 1024 * 1024)
        return await service.blocking(service.read_output, job_id, who, stream, offset or 0, size)


def _states(text: str) -> list[str]:
    """``pending, RUNNING`` -> ``["PENDING", "RUNNING"]``, each a known state."""
    states = [s.strip().upper() for s in text.split(",") if s.strip()]
    for state in states:
        if state not in JobState.__members__:
            raise InvalidRequestError("state", state, "unknown state", "PENDING,RUNNING")
    return states


def _add_cluster_routes(app: FastAPI, service: _Service) -> None:
    daemon = service.daemon

    @app.get("/api/v1/nodes", response_model=Layout, summary="Which job holds each node")
    @service.offloaded
    def nodes() -> JSONResponse:
        return JSONResponse(service.layout())

    @app.get("/api/v1/health", response_model=Health, summary="Liveness and basic facts")
    async def health() -> JSONResponse:
        return JSONResponse(service.health())

    @app.get(
        "/api/v1/status",
        response_model=Status,
        summary="Queue, running jobs and allocation (the status page)",
    )
    @service.offloaded
    def status() -> JSONResponse:
        return JSONResponse(service.status())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DaemonCollector(daemon))

    @app.get(
        "/metrics",
        response_class=Response,
        summary="Prometheus metrics (text format)",
        responses={200: {"content": {"text/plain": {}}}},
    )
    @service.offloaded
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")


def _add_pages(app: FastAPI) -> None:
    """The status page's three files (no route of the API's schema)."""
    for url, (file, media) in {
        "/": ("index.html", "text/html; charset=utf-8"),
        "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
        "/static/style.css": ("style.css", "text/css; charset=utf-8"),
    }.items():
        content = (WEB / file).read_bytes()

        def page(content: bytes = content, media: str = media) -> Callable[[], Response]:
            return lambda: Response(content, media_type=media)

        app.get(url, include_in_schema=False, name=file)(page())


def _body_schema(app: FastAPI) -> Callable[[str], dict[str, Any]]:
    """``openapi_extra`` for a route that parses its own body (the daemon keeps integers too long
    for any field as text, to refuse them naming the field), with the model's schema registered
    among the document's components."""
    models: dict[str, type[BaseModel]] = {
        "JobSubmission": JobSubmission,
        "BatchSubmission": BatchSubmission,
    }
    schemas = {
        name: model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, model in models.items()
    }
    for schema in list(schemas.values()):
        schemas.update(schema.pop("$defs", {}))
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = original()
            doc.setdefault("components", {}).setdefault("schemas", {}).update(schemas)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    def extra(name: str) -> dict[str, Any]:
        ref = {"$ref": f"#/components/schemas/{name}"}
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}

    return extra


def _parse_json(raw: bytes) -> Any:
    try:
        # An integer too long for any field is kept as text and refused naming its field.
        return json.loads(raw, parse_int=json_int)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise HttpError(
            HTTPStatus.BAD_REQUEST,
            "malformed_json",
            f"the body is not valid JSON: {e}",
            field="body",
            example='{"argv": ["true"], "nodes": 1}',
        ) from None


def _check_owner(who: Caller, row: Mapping[str, Any], job_id: int) -> None:
    if not who.may_touch(row["user"]):
        raise HttpError(
            HTTPStatus.FORBIDDEN,
            "forbidden",
            f"job {job_id} belongs to {row['user']}; {who.name} may touch their own jobs only",
            field="job_id",
            example="one of your jobs (orch queue -u $USER)",
        )


def _known(request: Request, names: Sequence[str]) -> None:
    for key, value in request.query_params.multi_items():
        if key not in names:
            known = f"known: {', '.join(names)}" if names else "none are known"
            raise InvalidRequestError(
                key, value, f"unknown query parameter ({known})", names[0] if names else "none"
            )


def _fingerprint(route: str, body: Any) -> str:
    """What an idempotency key stands for: the route and the decoded body (key order and
    spacing aside)."""
    text = json.dumps(
        [route, body], sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=repr
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _install_error_handlers(app: FastAPI) -> None:
    """Every error as the API's error body: the field, the message, an example."""

    def handle(status: int, code: str) -> Callable[[Request, Exception], Awaitable[Response]]:
        async def handler(request: Request, exc: Exception) -> Response:
            if isinstance(exc, InvalidRequestError):
                return error_response(status, code, str(exc), exc.field, exc.example)
            if isinstance(exc, StoreUnavailableError):
                # Nothing was stored: the same request may be sent again (idempotency key).
                message = f"{exc}; nothing was changed, retry later"
                headers = {"Retry-After": str(STORE_RETRY_AFTER_S)}
                return error_response(status, code, message, "store", "", headers)
            if isinstance(exc, IdempotencyKeyReusedError):
                example = "a new key for each new request, e.g. a UUID"
                return error_response(status, code, str(exc), "Idempotency-Key", example)
            field = "job_id" if isinstance(exc, JobNotFoundError | JobStateError) else "request"
            return error_response(status, code, str(exc), field)

        return handler

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HttpError)
        return exc.response()

    async def validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problem = exc.errors()[0]
        loc = [str(p) for p in problem.get("loc", ())]
        field = loc[1] if len(loc) > 1 else (loc[0] if loc else "request")
        value = problem.get("input")
        message = f"invalid {field}={_short(value)}: {problem.get('msg', 'invalid')}"
        return error_response(HTTPStatus.UNPROCESSABLE_ENTITY, "invalid_field", message, field)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
            # Starlette's Allow names the first route on the path only (GET and POST
            # /api/v1/jobs are two routes): name the methods of all of them, those of routes
            # without parameters first (/api/v1/jobs/batch is no job id).
            matching = [
                route
                for route in app.routes
                if isinstance(route, APIRoute) and route.path_regex.match(request.url.path)
            ]
            literal = [route for route in matching if "{" not in route.path]
            allowed = sorted({m for route in literal or matching for m in route.methods or ()})
            return error_response(
                exc.status_code,
                "method",
                f"{request.method} is not supported on {request.url.path} (allowed: "
                f"{', '.join(allowed)})",
                "method",
                allowed[0] if allowed else "GET",
                {"Allow": ", ".join(allowed)},
            )
        return error_response(
            exc.status_code, "no_route", f"no route {request.url.path}", "path", "/api/v1/jobs"
        )

    async def internal(request: Request, exc: Exception) -> Response:
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal", "internal error (see the daemon log)", None)

    app.add_exception_handler(HttpError, api_error)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for exc_type, status, code in (
        (InvalidRequestError, HTTPStatus.UNPROCESSABLE_ENTITY, "invalid_field"),
        (JobNotFoundError, HTTPStatus.NOT_FOUND, "not_found"),
        (IdempotencyKeyReusedError, HTTPStatus.CONFLICT, "idempotency_key_reused"),
        (JobStateError, HTTPStatus.CONFLICT, "wrong_state"),
        (StoreUnavailableError, HTTPStatus.SERVICE_UNAVAILABLE, "store_unavailable"),
        (OrchestratorError, HTTPStatus.BAD_REQUEST, "rejected"),
    ):
        app.add_exception_handler(exc_type, handle(status, code))
    app.add_exception_handler(Exception, internal)


def _short(value: Any, most: int = 100) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= most else text[:most] + "..."


class _DaemonCollector(Collector):
    """The daemon's state at scrape time, as Prometheus metrics."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterable[Metric]:
        daemon = self.daemon
        by_state = GaugeMetricFamily("orch_jobs", "Jobs in the store by state.", labels=["state"])
        counts = daemon.store.count_by_state()
        for state in JobState.__members__:
            by_state.add_metric([state], counts.get(state, 0))
        yield by_state
        owners = daemon.node_owners()
        yield GaugeMetricFamily("orch_nodes", "Nodes in the cluster.", daemon.cluster.size)
        yield GaugeMetricFamily(
            "orch_nodes_allocated", "Nodes held by jobs.", sum(o is not None for o in owners)
        )
        yield GaugeMetricFamily(
            "orch_queue_waiting", "Jobs waiting in the daemon's queue.", len(daemon.waiting)
        )
        yield CounterMetricFamily(
            "orch_jobs_started", "Jobs started since the daemon started.", daemon.started_total
        )
        yield CounterMetricFamily(
            "orch_scheduler_ticks", "Scheduler ticks since start.", daemon.ticks
        )
        yield GaugeMetricFamily(
            "orch_tick_seconds", "Duration of the last tick.", daemon.last_tick_s
        )


_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOFOLLOW_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _read_output(path: Path, root: Path, offset: int, limit: int) -> bytes:
    """At most ``limit`` bytes at ``offset`` of a job's output file below ``root``.

    Each folder from ``root`` down and the file itself are opened without following a link
    (``O_NOFOLLOW``, one component at a time, so a link swapped in meanwhile is refused too), and
    the file must be a regular file with one name: a job cannot make the daemon serve the token
    or another file by putting a symbolic link, a hard link or a FIFO in its output's place.

    Raises:
        HttpError: 403, the path is not such a file.
    """
    refused = HttpError(
        HTTPStatus.FORBIDDEN,
        "output_refused",
        f"{path} is not a regular file of the job's own (it is, or lies behind, a link, a hard "
        "link or a FIFO, likely put there by the job): the daemon serves output only from the "
        "files it made",
        field="stream",
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
            inner = os.open(name, _NOFOLLOW_DIR, dir_fd=fd)
            os.close(fd)
            fd = inner
        inner = os.open(parts[-1], _NOFOLLOW_FILE, dir_fd=fd)
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
