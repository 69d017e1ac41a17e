"""The daemon's client, used by the ``orch`` CLI and the Hydra launcher.

Submissions carry an idempotency key and are retried on connection errors with the same key,
so a reply lost in a daemon crash never makes a job twice.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from orchestrator.daemon.state_folder import DaemonFiles, read_daemon_info
from orchestrator.daemon.wire import Connection, Response
from orchestrator.exceptions import DaemonError, InvalidRequestError, OrchestratorError

__all__ = ["ApiError", "DaemonClient", "default_state_dir"]

STORE_WAIT_S = 30.0
"""How long a request keeps asking a daemon whose store refuses writes (503, ``Retry-After``)."""


def default_state_dir() -> Path:
    """``$ORCH_STATE_DIR``, else ``~/.orch``."""
    return Path(os.environ.get("ORCH_STATE_DIR") or Path.home() / ".orch")


class ApiError(OrchestratorError):
    """The daemon refused a request.

    Attributes:
        status: The HTTP status.
        code: The error code of the body.
        field: The field at fault, if any.
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        self.status, self.code, self.field = status, code, field
        super().__init__(message)


class DaemonClient:
    """Talks to one daemon over HTTP (one kept-alive connection per client; not thread-safe).

    Args:
        url: The daemon's base URL (``http://127.0.0.1:PORT``).
        token: The bearer token (needed for changes only).
        timeout_s: Per-request socket timeout.
        retries: How often a request is retried on connection errors.
    """

    def __init__(
        self, url: str, token: str | None = None, timeout_s: float = 30.0, retries: int = 20
    ) -> None:
        self.url = url
        self.host, self.port, self.socket_path = _parse_url(url)
        self.token = token
        self.timeout_s = timeout_s
        self.retries = retries
        self._conn: Connection | None = None
        self._root: Path | None = None

    @classmethod
    def from_state_dir(
        cls, root: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> DaemonClient:
        """A client of the daemon running on state folder ``root`` (default: ``$ORCH_STATE_DIR``
        or ``~/.orch``).

        Raises:
            DaemonError: no daemon runs there.
        """
        root = Path(root) if root is not None else default_state_dir()
        info = read_daemon_info(root)
        if info is None:
            raise DaemonError(f"no daemon runs on {root}: start one with `orch daemon start`")
        token_path = DaemonFiles(root).token
        token = token_path.read_text().strip() if token_path.exists() else None
        client = cls(info["url"], token, **kwargs)
        client._root = root
        return client

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> Connection:
        return Connection(self.host, self.port, self.socket_path, self.timeout_s)

    def _rediscover(self) -> None:
        # After a daemon restart the port may differ: read daemon.json again.
        if self._root is None:
            return
        info = read_daemon_info(self._root)
        if info is not None:
            self.url = info["url"]
            self.host, self.port, self.socket_path = _parse_url(self.url)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> Any:
        """One request; the decoded JSON reply.

        Raises:
            ApiError: a 4xx or 5xx reply.
            DaemonError: the daemon cannot be reached (after the retries).
        """
        data = json.dumps(body).encode() if body is not None else None
        send = {"Content-Type": "application/json", **(headers or {})}
        if self.token:
            send["Authorization"] = f"Bearer {self.token}"
        if data is not None or method == "POST":
            send["Content-Length"] = str(len(data or b""))
        attempts = self.retries + 1 if retry else 1
        give_up_at = time.monotonic() + STORE_WAIT_S
        last: Exception | None = None
        for attempt in range(attempts):
            try:
                if self._conn is None:
                    self._conn = self._connect()
                # A reply that says Connection: close closes it; the next request reconnects.
                response = self._conn.request(method, path, data, send)
                payload = response.body
            except OSError as e:
                last = e
                self.close()
                if attempt + 1 < attempts:
                    time.sleep(min(0.05 * 2**attempt, 1.0))
                    self._rediscover()
                continue
            content_type = response.header("Content-Type")
            wait = _retry_after(response) if response.status == 503 else None
            if wait is not None and attempt + 1 < attempts and time.monotonic() + wait < give_up_at:
                # The daemon stored nothing (its store refuses writes): ask again when it says.
                time.sleep(wait)
                continue
            if response.status >= 400:
                try:
                    err = json.loads(payload)["error"]
                except (ValueError, KeyError, TypeError):
                    err = {"code": "http", "message": payload.decode(errors="replace")}
                raise ApiError(
                    response.status, err.get("code", ""), err.get("message", ""), err.get("field")
                )
            if content_type.startswith("application/json"):
                return json.loads(payload)
            return payload.decode()
        raise DaemonError(f"cannot reach the daemon at {self.url}: {last}")

    # -- the API ------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return dict(self.request("GET", "/api/v1/health", retry=False))

    def submit(self, job: Mapping[str, Any], key: str | None = None) -> list[int]:
        """Submit one job (or one array); returns the ids made."""
        headers = {"Idempotency-Key": key or _new_key()}
        return list(self.request("POST", "/api/v1/jobs", dict(job), headers)["job_ids"])

    def submit_batch(
        self, jobs: Sequence[Mapping[str, Any]], key: str | None = None
    ) -> list[list[int]]:
        """Submit many jobs atomically; per job, the ids made."""
        headers = {"Idempotency-Key": key or _new_key()}
        body = {"jobs": [dict(j) for j in jobs]}
        return [
            list(ids)
            for ids in self.request("POST", "/api/v1/jobs/batch", body, headers)["job_ids"]
        ]

    def jobs(self, **filters: Any) -> list[dict[str, Any]]:
        """Jobs matching ``state`` (comma list), ``user``, ``name``, ``array_id``; every page,
        or at most ``limit`` jobs."""
        wanted = filters.pop("limit", None)
        out: list[dict[str, Any]] = []
        offset: int | None = 0
        while offset is not None and (wanted is None or len(out) < wanted):
            params = {k: v for k, v in filters.items() if v is not None}
            params["offset"] = offset
            if wanted is not None:
                params["limit"] = wanted - len(out)
            page = self.request("GET", "/api/v1/jobs?" + urlencode(params))
            out += page["jobs"]
            offset = page["next_offset"]
        return out

    def history(self, **filters: Any) -> list[dict[str, Any]]:
        """Finished jobs (as ``sacct``): ``ended_after`` / ``ended_before`` (epoch seconds),
        ``state`` (default every finished state), ``user``, ``name``; every page."""
        from orchestrator.scheduling.job import FINISHED_VALUES  # not at the top: see _finished()

        filters.setdefault("state", ",".join(sorted(FINISHED_VALUES)))
        return self.jobs(**filters)

    def history_frame(self, **filters: Any) -> Any:
        """:meth:`history` as a pandas DataFrame, with ``elapsed_s`` and times as timestamps;
        ``cpu_time_s`` and ``max_rss_mb`` are numbers (NaN: not known)."""
        import pandas as pd

        frame = pd.DataFrame(self.history(**filters))
        if frame.empty:
            return frame
        frame["elapsed_s"] = frame["end_time"] - frame["start_time"]
        for column in ("cpu_time_s", "max_rss_mb"):
            # Floats even when all are None (objects otherwise), NaN from a daemon without them.
            if column in frame:
                frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
            else:
                frame[column] = float("nan")
        for column in ("submit_time", "start_time", "end_time"):
            frame[column] = pd.to_datetime(frame[column], unit="s")
        return frame

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/jobs/{job_id}"))

    def action(self, job_id: int, action: str) -> str:
        """``cancel``, ``hold`` or ``release``; returns the new state."""
        return str(self.request("POST", f"/api/v1/jobs/{job_id}/{action}", {})["state"])

    def nodes(self) -> dict[str, Any]:
        return dict(self.request("GET", "/api/v1/nodes"))

    def output(self, job_id: int, stream: str = "stdout", offset: int = 0) -> dict[str, Any]:
        query = urlencode({"stream": stream, "offset": offset})
        return dict(self.request("GET", f"/api/v1/jobs/{job_id}/output?{query}"))

    def resolve(self, text: str) -> int:
        """A job id from ``12`` or Slurm's array notation ``12_3``.

        Raises:
            InvalidRequestError: naming ``job_id``.
        """
        head, sep, index = text.partition("_")
        if not _is_number(head) or (sep and not _is_number(index)):
            raise InvalidRequestError("job_id", text, "expected ID or ARRAYID_INDEX", "12_3")
        if not sep:
            return int(head)
        for job in self.jobs(array_id=int(head)):
            if job["array_index"] == int(index):
                return int(job["id"])
        raise InvalidRequestError("job_id", text, f"array {head} has no index {index}", "12_0")

    def wait(self, job_id: int, timeout_s: float = 60.0, poll_s: float = 0.1) -> dict[str, Any]:
        """Poll until the job has ended; returns its document.

        Raises:
            DaemonError: still not ended after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            doc = self.job(job_id)
            if _finished(doc["state"]):
                return doc
            if time.monotonic() > deadline:
                raise DaemonError(f"job {job_id} still {doc['state']} after {timeout_s}s")
            time.sleep(poll_s)


def _finished(state: str) -> bool:
    """Whether a job in ``state`` has ended. The job states' module is imported here, on first
    use, rather than by this module: ``orch submit`` and ``orch cancel`` need none of it."""
    from orchestrator.scheduling.job import FINISHED_VALUES

    return state in FINISHED_VALUES


def _is_number(text: str) -> bool:
    """ASCII digits, few enough for a job id (``str.isdigit`` takes ``²``, ``int`` does not)."""
    return 0 < len(text) <= 18 and text.isascii() and text.isdigit()


def _parse_url(url: str) -> tuple[str, int, str | None]:
    """``(host, port, unix socket path)`` of ``http://HOST:PORT`` or ``unix:///PATH``."""
    parts = urlsplit(url)
    if parts.scheme == "unix" and parts.path:
        return "localhost", 0, parts.path
    if parts.scheme != "http" or parts.hostname is None:
        raise DaemonError(f"daemon URL {url!r}: expected http://HOST:PORT or unix:///PATH")
    return parts.hostname, parts.port or 80, None


def _retry_after(response: Response) -> float | None:
    """The seconds of a ``Retry-After`` header (capped), None without one."""
    text = response.header("Retry-After")
    try:
        return min(max(float(text), 0.1), 5.0)
    except ValueError:
        return None


def _new_key() -> str:
    """A random idempotency key: 128 bits as 32 hex digits, as ``uuid4().hex`` (whose module
    import costs the command line a few milliseconds: it loads ``platform``)."""
    return os.urandom(16).hex()
