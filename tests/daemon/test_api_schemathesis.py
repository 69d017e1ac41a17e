"""Schemathesis fuzzing of the daemon's HTTP API from its own OpenAPI document (issue 13).

The server is the real :class:`~orchestrator.daemon.listener.ApiServer` in this process, over a real
daemon and a SQLite store, with a simulated backend (``sim_world``): a job that starts runs no
process. The document is read from the live ``/api/v1/openapi.json``. Every operation in it gets
what Schemathesis's pytest integration runs: the document's examples, the coverage cases
(boundary values, schema violations, undeclared methods, a missing ``Authorization``) and
generated cases, positive and negative, each sent with ``Authorization: Bearer TOKEN`` so that
the authenticated routes are exercised past the token check. Two hooks keep cases deep without
changing whether they are valid: job ids mostly name the 16 seeded jobs, and a submission
without ``argv`` or ``nodes`` is sent as generated or with them added. Between two requests
the simulated clock moves on and the daemon ticks, so jobs start, end, are held, released and
cancelled meanwhile.

Every response must satisfy:

* no 5xx, except 503 with ``Retry-After`` (the store refuses writes: retry later);
* every 4xx (but to HEAD) has the body ``{"error": {"code", "message", "field"}}`` with a
  non-empty ``field`` naming what was wrong (a body field, a parameter, a header, ...);
* Schemathesis's own checks, less the two this document cannot support (see :data:`CHECKS`).

A failing case does not stop the run: each kind of failure (check, reason, method, status, error
code) is kept with its first case, and the test fails at the end listing them all.

Bounds: :data:`MAX_EXAMPLES` generated cases per operation besides its coverage cases, no
shrinking, and a wall-time budget per operation and for the whole test (past it, an operation's
remaining cases are dropped): about 75 s on 2 cores, at most about 105 s. Derandomized, no
example database: every run of the same suite sends the same cases (Hypothesis also draws
constants from the project modules loaded, so this file alone sends partly other cases than the
whole suite does).

Why not ``schemathesis.pytest.from_fixture(...).parametrize()``: under pytest 9.2 its lazy loader
fails before any case runs (``'Function' object has no attribute '_nodeid'``: schemathesis
4.32.5 renames the test node through an attribute pytest 9.2 no longer has), and a schema loaded
at import time would need the server at collection. The test builds the same per-operation
Hypothesis tests through the function that integration uses (``get_all_tests``) and runs them.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, CheckContext, HookContext, Response
from schemathesis.checks import load_all_checks
from schemathesis.core.failures import Failure
from schemathesis.core.result import Ok
from schemathesis.errors import FailureGroup
from schemathesis.pytest.lazy import get_all_tests
from sim_world import Outcome, SimBackend, SimWorld

from orchestrator.daemon.listener import ApiServer
from orchestrator.daemon.service import Daemon, DaemonConfig
from orchestrator.daemon.spec import JobSpec
from orchestrator.resources.cluster import load_cluster
from orchestrator.store import Store, sqlite_url

TOKEN = "schemathesis-" + "0123456789abcdef" * 2
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLUSTER = load_cluster("local")  # 4 flat nodes
NODES = tuple(CLUSTER.topology.node_name(i) for i in range(CLUSTER.size))
AnyCase = Case[APIOperation[Any, Any, Any, Any]]

MAX_EXAMPLES = 500
"""Generated (fuzzing phase) cases per operation; its coverage cases come on top."""
OPERATION_BUDGET_S = 20.0
"""Wall time one operation may take; past it, its remaining cases are dropped."""
TOTAL_BUDGET_S = 100.0
"""Wall time all operations together may take (the same cut)."""
TICK_S = 0.5
"""Simulated seconds between two requests (one daemon tick each)."""

CHECKS: dict[str, Any] = {
    # 503 is how the daemon says that the store refuses writes: allowed here, and
    # `retry_after_on_503` below requires its Retry-After.
    "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]},
    # The document lists a few codes per operation, not every 400/403/404/405/411 the daemon
    # rightly answers, so every job id that does not exist would count; every 4xx's body is
    # checked by `error_body_names_field` instead.
    "status_code_conformance": {"enabled": False},
    # The document's schemas are looser than the validation (ranges that depend on the cluster,
    # the array and dependency syntax, durations, the text rules live in code): a schema-valid
    # submission may rightly get 422, so "valid data is accepted" does not hold here.
    "positive_data_acceptance": {"enabled": False},
}

SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # No shrinking: each step is another request, and the first failing case of each kind
    # already names its operation, status and body.
    phases=[Phase.explicit, Phase.generate],
    # Each case is an HTTP request and a daemon tick; bodies may be large.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


class FuzzWorld(SimWorld):
    """An attempt of a job with ``SIM=long`` runs for ever, any other runs 20 simulated seconds
    and exits 0, whatever else its environment says (a fuzzed ``env`` may hold a ``SIM`` plan
    the world cannot parse)."""

    def plan_of(self, env: Mapping[str, str], attempt: int) -> Outcome:
        return Outcome("ok", 1e12 if env.get("SIM") == "long" else 20.0)


class FuzzBackend(SimBackend):
    """The simulated backend with output files below ``root``, as the local backend keeps them,
    so that the output route reads real files."""

    def __init__(self, world: SimWorld, root: Path) -> None:
        super().__init__(world)
        self.root = root

    def output_paths(self, job_id: int) -> tuple[str, str] | None:
        folder = self.root / "jobs" / str(job_id)
        return str(folder / "stdout"), str(folder / "stderr")


class BudgetSpentError(Exception):
    """Raised instead of sending a case once the budget is spent: it ends the operation's
    Hypothesis run (caught by the test)."""


@dataclass
class LiveApi:
    server: ApiServer
    daemon: Daemon
    world: SimWorld
    started: float = field(default_factory=time.monotonic)
    operation_started: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return str(self.server.url)

    def tick(self) -> None:
        """Move the simulated clock and run one daemon tick (what the daemon's loop does)."""
        with self.daemon.lock:
            self.world.advance(TICK_S)
            self.daemon.tick(self.world.now)

    def spend(self, label: str) -> None:
        """Raise :class:`BudgetSpentError` once ``label`` or the whole test is over its budget."""
        now = time.monotonic()
        first = self.operation_started.setdefault(label, now)
        if now - first > OPERATION_BUDGET_S or now - self.started > TOTAL_BUDGET_S:
            raise BudgetSpentError(label)


SEEDED = 16
"""Jobs 1-16 are there before the first request (the job ids the fuzzer mostly sends)."""


def _seed_jobs(daemon: Daemon, world: SimWorld, root: Path) -> None:
    """Jobs 1-16 in several states, with output files, for the job routes to act on: job 1 runs
    for ever on one node, so the whole-cluster jobs wait, pending or held, until cancelled."""

    def submit(**fields: Any) -> int:
        spec = JobSpec.from_mapping({"argv": ["true"], "nodes": 1, **fields}, "", world.now)
        return daemon.submit([spec])[0][0]

    running = submit(name="running", env={"SIM": "long"})
    submit(name="held", nodes=4, hold=True)
    daemon.cancel(submit(name="cancelled", hold=True))
    submit(name="array", nodes=4, array="0-2", hold=True)  # jobs 4-6
    while submit(name="whole-cluster", nodes=4, hold=world.now % 2 == 0) < SEEDED:
        world.advance(1.0)
    daemon.tick(world.now)
    for job_id in range(1, SEEDED + 1):
        folder = root / "jobs" / str(job_id)
        folder.mkdir(parents=True)
        (folder / "stdout").write_text("".join(f"line {i} of job {job_id}\n" for i in range(50)))
        (folder / "stderr").write_text("")
    # A job that put a link in its output's place: the output route refuses it (403).
    (root / "token").write_text(TOKEN)
    stdout = root / "jobs" / str(running) / "stdout"
    stdout.unlink()
    stdout.symlink_to(root / "token")


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    root = tmp_path_factory.mktemp("schemathesis")
    world = FuzzWorld(NODES)
    store = Store(sqlite_url(root / "orch.db"))
    daemon = Daemon(
        store, CLUSTER, FuzzBackend(world, root), DaemonConfig(grace_s=2.0), clock=world.clock
    )
    daemon.recover(world.now)
    _seed_jobs(daemon, world, root)
    server = ApiServer(daemon, TOKEN)
    thread = threading.Thread(target=server.serve_forever, name="api", daemon=True)
    thread.start()
    try:
        yield LiveApi(server, daemon, world)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(30)
        store.close()


@pytest.fixture(scope="module")
def api_schema(live_api: LiveApi) -> schemathesis.BaseSchema:
    # An explicit configuration: a schemathesis.toml lying around must not change the run.
    config = schemathesis.Config.from_dict(
        {
            "base-url": live_api.url,
            "headers": AUTH,
            "request-timeout": 30,
            "generation": {"deterministic": True, "database": "none", "no-shrink": True},
            "checks": CHECKS,
        }
    )
    schema = schemathesis.openapi.from_url(
        f"{live_api.url}/api/v1/openapi.json", config=config, timeout=30
    )
    schema.hook(map_path_parameters)
    schema.hook(flatmap_body)
    return schema


# -- hooks that keep generated cases deep ---------------------------------------------------
# Each keeps a case exactly as valid or invalid as generated (a negative case stays negative).


def map_path_parameters(
    context: HookContext, path_parameters: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A job id from 1 to 2**31 becomes one of the seeded jobs (1-16), so that the job routes
    find a job more often than "404 no such job"; 0, negative, huge and non-integer ids stay as
    generated."""
    job_id = (path_parameters or {}).get("job_id")
    if (
        path_parameters
        and isinstance(job_id, int)
        and not isinstance(job_id, bool)
        and 1 <= job_id < 2**31
    ):
        return {**path_parameters, "job_id": 1 + job_id % SEEDED}
    return path_parameters


def _runnable(item: Any) -> Any:
    """``item`` with ``argv: ["true"]`` if it has neither argv nor script, and ``nodes: 1`` if
    it has neither nodes nor shape (no field is required; the daemon needs one of each)."""
    if not isinstance(item, dict):
        return item
    added: dict[str, Any] = {}
    if "argv" not in item and "script" not in item:
        added["argv"] = ["true"]
    if "nodes" not in item and "shape" not in item:
        added["nodes"] = 1
    return {**item, **added}


def flatmap_body(context: HookContext, body: Any) -> st.SearchStrategy[Any]:
    """A submission is sent as generated or made runnable (:func:`_runnable`), so that more of
    them get past "argv or script needed" to the other fields' checks, and some are accepted."""
    if isinstance(body, dict) and isinstance(body.get("jobs"), list):
        return st.sampled_from([body, {**body, "jobs": [_runnable(i) for i in body["jobs"]]}])
    return st.sampled_from([body, _runnable(body)])


# -- the checks added to Schemathesis's ------------------------------------------------------


def _header(response: Response, name: str) -> str | None:
    for key, values in response.headers.items():
        if key.lower() == name.lower() and values:
            return values[0]
    return None


def _require(condition: object, message: str) -> None:
    """Fail a check with ``message`` (no assert: pytest's rewriting would add the values, and
    the message tells kinds of failure apart)."""
    if not condition:
        raise AssertionError(message)


def retry_after_on_503(ctx: CheckContext, response: Response, case: AnyCase) -> bool | None:
    """A 503 tells the client when to come back (``Retry-After``)."""
    if response.status_code == 503:
        _require(_header(response, "Retry-After"), "503 without a Retry-After header")
    return None


def _sends_empty_name(case: AnyCase) -> bool:
    """Whether the request has a query parameter or a body field named ``""``: then an error
    field ``""`` does name it."""
    return "" in (case.query or {}) or (isinstance(case.body, dict) and "" in case.body)


def error_body_names_field(ctx: CheckContext, response: Response, case: AnyCase) -> bool | None:
    """Every 4xx has the JSON body ``{"error": {"code", "message", "field"}}``, ``field`` naming
    what was wrong."""
    status = response.status_code
    if not 400 <= status < 500 or response.request.method == "HEAD":
        return None
    try:
        doc = json.loads(response.content)
    except ValueError:
        content_type = _header(response, "Content-Type")
        raise AssertionError(
            f"{status}: the body is not JSON (Content-Type {content_type})"
        ) from None
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        raise AssertionError(f"{status}: no 'error' object in the body")
    for key in ("code", "message"):
        _require(isinstance(error.get(key), str) and error[key], f"{status}: no error.{key}")
    name = error.get("field")
    _require(isinstance(name, str), f"{status} {error['code']!r}: no error.field")
    _require(name or _sends_empty_name(case), f"{status} {error['code']!r}: error.field is empty")
    return None


# -- failures, kept by kind --------------------------------------------------------------------


def _path_pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{[^/]*?\\\}", "[^/]+", re.escape(template)) + "$")


def _one_line(text: str, most: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= most else text[: most - 3] + "..."


@dataclass
class Kind:
    """One kind of failure: the operations it was found on, how often, and its first case."""

    first: str
    operations: dict[str, None] = field(default_factory=dict)
    count: int = 0


@dataclass
class Findings:
    """The distinct failures of a run, by kind: check, reason, method, status and error code."""

    routes: list[tuple[str, re.Pattern[str]]]
    """Every documented (method, path pattern)."""
    kinds: dict[tuple[object, ...], Kind] = field(default_factory=dict)

    def documented(self, method: str, path: str) -> bool:
        return any(m == method and p.match(path) for m, p in self.routes)

    def add(self, case: AnyCase, failure: Failure, response: Response | None) -> None:
        request = response.request if response is not None else None
        method = str(request.method) if request is not None else case.method.upper()
        url = str(request.path_url) if request is not None else case.formatted_path
        # An undeclared-method probe that lands on another documented operation (GET of
        # /api/v1/jobs/batch is GET /api/v1/jobs/{job_id} with job_id "batch") is no failure.
        if failure.code == "ST204" and self.documented(method, url.partition("?")[0]):
            return
        status = response.status_code if response is not None else None
        body = response.content.decode(errors="replace") if response is not None else ""
        try:
            error_code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            error_code = None
        # The added checks' messages hold no values: they tell the kinds apart.
        reason = failure.message if failure.code == "ST901" else ""
        key = (failure.title, reason, method, status, error_code)
        if key not in self.kinds:
            sent = request.body if request is not None else None
            sent_text = (
                sent.decode(errors="replace") if isinstance(sent, bytes) else str(sent or "")
            )
            message = _one_line(failure.message.split("\n\n")[0], 300)
            self.kinds[key] = Kind(
                f"{failure.title}{': ' + message if message else ''}\n"
                f"    e.g. {method} {_one_line(url, 150)}"
                + (f"  body {_one_line(sent_text, 150)}" if sent_text else "")
                + f"\n    -> {status} {_one_line(body, 250)}"
            )
        kind = self.kinds[key]
        kind.operations[case.operation.label] = None
        kind.count += 1

    def report(self) -> str:
        lines = [f"{len(self.kinds)} kinds of failure (cases, operations, the first case):"]
        # Sorted: the checks of one case fail in no fixed order.
        for kind in sorted(self.kinds.values(), key=lambda kind: kind.first):
            lines.append(f"- {kind.count} case(s) of {', '.join(kind.operations)}")
            lines.append(f"    {kind.first}")
        return "\n".join(lines)


def test_api_conforms(live_api: LiveApi, api_schema: schemathesis.BaseSchema) -> None:
    operations = [r.ok() for r in api_schema.get_all_operations() if isinstance(r, Ok)]
    findings = Findings([(op.method.upper(), _path_pattern(op.path)) for op in operations])

    def check_case(case: AnyCase) -> None:
        live_api.spend(case.operation.label)
        response: Response | None = None
        try:
            response = case.call(headers=AUTH)
            case.validate_response(
                response,
                additional_checks=[retry_after_on_503, error_body_names_field],
                headers=AUTH,
            )
        except FailureGroup as group:
            for failure in group.exceptions:
                findings.add(case, failure, response)
        except requests.RequestException as e:  # no answer at all
            failure = Failure(operation=case.operation.label, title="No response", message=repr(e))
            findings.add(case, failure, None)
        finally:
            live_api.tick()

    load_all_checks()
    schema = api_schema.clone(test_function=check_case)
    tests = []
    for result in get_all_tests(
        schema=schema, test_func=check_case, settings=SETTINGS, given_kwargs=None
    ):
        if not isinstance(result, Ok):
            raise result.err()  # an operation the document gets wrong
        tests.append(result.ok())
    # Cancel last: hold and release find the seeded jobs still alive.
    tests.sort(key=lambda test: test[0].path.endswith("/cancel"))
    for _, run in tests:
        try:
            run()
        except* BudgetSpentError:
            pass
    if findings.kinds:
        pytest.fail(findings.report(), pytrace=False)


UNAUTHENTICATED = [
    ("POST", "/api/v1/jobs"),
    ("POST", "/api/v1/jobs/batch"),
    ("POST", "/api/v1/jobs/2/cancel"),
    ("POST", "/api/v1/jobs/2/hold"),
    ("GET", "/api/v1/jobs/2/output"),
]


def test_without_token_401_names_authorization(live_api: LiveApi) -> None:
    """A change or an output read without the token: 401 with ``WWW-Authenticate``, nothing
    done, and an error body naming the ``Authorization`` header."""
    before = live_api.daemon.store.list_jobs()
    problems = []
    for method, path in UNAUTHENTICATED:
        response = requests.request(
            method, live_api.url + path, json={"argv": ["true"]}, timeout=30
        )
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            error = None
        if (
            response.status_code != 401
            or not response.headers.get("WWW-Authenticate", "").startswith("Bearer")
            or not isinstance(error, dict)
            or error.get("field") != "Authorization"
        ):
            www = response.headers.get("WWW-Authenticate")
            problems.append(
                f"{method} {path} -> {response.status_code} (WWW-Authenticate {www!r}) "
                + _one_line(response.text, 300)
            )
    assert live_api.daemon.store.list_jobs() == before
    if problems:
        pytest.fail("\n".join(["without a token:", *problems]), pytrace=False)
