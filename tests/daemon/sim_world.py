"""A simulated world for deterministic simulation tests of the daemon (no processes, no sleeps).

Three pieces, each a plain object the test drives step by step:

* :class:`SimWorld`: the virtual clock (:meth:`SimWorld.advance`), the simulated tasks of every
  attempt ever launched, the nodes that are down, and the checks that only the world can make
  (:attr:`SimWorld.violations`): no attempt started twice, attempt numbers only grow, never two
  live attempts of one job, no node shared by two live attempts, no start on a down node, no
  rerun of a job after an attempt of it succeeded, no poll of a handle the world never issued.
  On a cluster that shares nodes (``SimWorld(..., shared=True)``) several attempts may run on one
  node, but never on the same GPU or core at once (the indices come from the launch's
  ``node_gpus`` and ``node_cpus``), and an exclusive attempt never shares its nodes.
* :class:`SimBackend`: the daemon's backend, a thin view over a world. A daemon thrown away in a
  simulated crash leaves the world (and its tasks) as they are; the new daemon gets a new
  :class:`SimBackend` over the same world.
* :class:`FaultyStore`: the real :class:`~orchestrator.store.Store` on a SQLite file (copied from
  a template migrated once per process: ~2 ms instead of ~20 ms of alembic), whose writes can be
  made to fail on demand ("database or disk is full", "database is locked").

What a job does is chosen by the test through its environment: ``env={"SIM": PLAN}``. A plan
is one outcome per attempt separated by ``;`` (the last one repeats for later attempts); an
outcome is ``KIND[:DURATION[:CODE]][+stubborn]``:

* ``ok:5``: every task exits 0 after 5 virtual seconds.
* ``fail:3:1``: rank 0 exits 1 after 3 s; the other ranks would run 10 s longer (the daemon stops
  them, as Slurm's ``--kill-on-bad-exit``).
* ``vanish:2``: every task disappears without a status after 2 s (a lost process).
* ``startfail``: :meth:`SimBackend.start` raises :class:`~orchestrator.exceptions.BackendError`.
* ``+stubborn``: the tasks ignore SIGTERM (only SIGKILL ends them early).

A job without ``SIM`` runs ``ok:1``. A task on a node that goes down is lost at once.

>>> parse_plan("fail:3:1;ok:2+stubborn")
(Outcome(kind='fail', duration=3.0, code=1, stubborn=False), \
Outcome(kind='ok', duration=2.0, code=0, stubborn=True))
"""

from __future__ import annotations

import atexit
import math
import shutil
import signal
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

from orchestrator.backends.contract import BaseBackend, Handle, LaunchSpec, Liveness, PollResult
from orchestrator.exceptions import BackendError
from orchestrator.store import Store, sqlite_url
from orchestrator.store.schema import metadata

__all__ = [
    "DATABASE_LOCKED",
    "DISK_FULL",
    "FaultyStore",
    "Outcome",
    "SimAttempt",
    "SimBackend",
    "SimCrash",
    "SimTask",
    "SimWorld",
    "StoreFactory",
    "parse_plan",
]

PLAN_ENV = "SIM"
"""The environment variable of a job that names its plan."""
DEFAULT_PLAN = "ok:1"
FAIL_TAIL_S = 10.0
"""How much longer than the failing rank the other ranks of a ``fail`` outcome run."""
DISK_FULL = "database or disk is full"
DATABASE_LOCKED = "database is locked"

Kind = Literal["ok", "fail", "vanish", "startfail"]
_KINDS: tuple[Kind, ...] = ("ok", "fail", "vanish", "startfail")


class SimCrash(BaseException):
    """The simulated daemon process dies here: raised by :meth:`SimBackend.start` after the
    tasks were launched (before the daemon records them RUNNING). A ``BaseException`` so that no
    ``except Exception`` in the daemon can swallow it; the test throws that daemon away."""


@dataclass(frozen=True)
class Outcome:
    """What one attempt of a job does (see the module docstring)."""

    kind: Kind
    duration: float = 1.0
    code: int = 0
    stubborn: bool = False

    def __str__(self) -> str:
        text = self.kind if self.kind == "startfail" else f"{self.kind}:{self.duration:g}"
        if self.kind == "fail":
            text += f":{self.code}"
        return text + ("+stubborn" if self.stubborn else "")


def parse_plan(text: str) -> tuple[Outcome, ...]:
    """Parse a plan (``ok:5;fail:3:1+stubborn``): one :class:`Outcome` per attempt.

    Raises:
        ValueError: a malformed plan (a test bug).
    """
    out: list[Outcome] = []
    for part in text.split(";"):
        body, plus, flag = part.strip().partition("+")
        if plus and flag != "stubborn":
            raise ValueError(f"unknown plan flag {flag!r} in {text!r}")
        kind, *args = body.split(":")
        found = next((k for k in _KINDS if k == kind), None)
        if found is None:
            raise ValueError(f"unknown plan kind {kind!r} in {text!r}")
        duration = float(args[0]) if args else 1.0
        code = int(args[1]) if len(args) > 1 else (1 if kind == "fail" else 0)
        if found == "fail" and code == 0:
            raise ValueError(f"a fail outcome needs a non-zero code: {text!r}")
        out.append(Outcome(found, duration, code, bool(plus)))
    return tuple(out)


@dataclass
class SimTask:
    """One simulated process (one rank of an attempt).

    Attributes:
        rank: Its rank in the attempt.
        node: The node it runs on.
        end_at: When it ends by itself (virtual time).
        code: The status it ends with by itself (None: it vanishes without one).
        stubborn: It ignores SIGTERM.
        status: Its exit status once it ended with one (128 + signal for a signal).
        lost: It is gone without a status (vanished, its node went down, aborted).
        ended_at: When it ended (either way); None while it runs.
    """

    rank: int
    node: str
    end_at: float
    code: int | None
    stubborn: bool = False
    status: int | None = None
    lost: bool = False
    ended_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.ended_at is None

    def end(self, now: float, status: int | None) -> None:
        """End the task at ``now`` with ``status`` (None: lost)."""
        if self.alive:
            self.status, self.lost, self.ended_at = status, status is None, now


@dataclass
class SimAttempt:
    """One launched attempt of a job: its tasks, and what happened to it."""

    job_id: int
    attempt: int
    nodes: tuple[str, ...]
    started_at: float
    outcome: Outcome
    tasks: list[SimTask] = field(default_factory=list)
    aborted: bool = False
    whole: bool = True
    """It holds its nodes entirely (a whole-node cluster, or an exclusive job)."""
    node_gpus: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Per node, the GPU indices it was launched with (a shared cluster)."""
    node_cpus: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Per node, the core indices it was launched with (a shared cluster, not exclusive)."""
    signals: list[tuple[float, int]] = field(default_factory=list)
    """Every signal the daemon sent it: (virtual time, signum)."""

    @property
    def key(self) -> tuple[int, int]:
        return (self.job_id, self.attempt)

    @property
    def alive(self) -> bool:
        """Some task still runs."""
        return any(t.alive for t in self.tasks)

    def alive_on(self, node: str) -> bool:
        """Some task of it still runs on ``node``."""
        return any(t.alive and t.node == node for t in self.tasks)

    @property
    def succeeded(self) -> bool:
        """Every task exited 0 (the attempt's work is done: it must never run again)."""
        return bool(self.tasks) and all(t.status == 0 for t in self.tasks)

    def result(self) -> PollResult:
        """What a poll of this attempt finds now (the local backend's rules)."""
        codes = tuple(t.status for t in self.tasks)
        alive = sum(t.alive for t in self.tasks)
        if alive:
            liveness = Liveness.RUNNING
        elif any(t.lost for t in self.tasks):
            liveness = Liveness.LOST
        else:
            liveness = Liveness.EXITED
        return PollResult(liveness, codes, alive)


class SimWorld:
    """The simulated cluster: virtual time, simulated tasks, down nodes, and the world's checks.

    Args:
        nodes: The names of the cluster's nodes.
        now: The virtual time to start at.
        shared: The cluster shares nodes: attempts may share a node, not its GPUs or cores.
    """

    def __init__(self, nodes: Sequence[str], now: float = 1_000.0, *, shared: bool = False) -> None:
        self.nodes = tuple(nodes)
        self.now = now
        self.shared = shared
        self.down: set[str] = set()
        self.nodes_changed_at = -math.inf
        """When a node last went down or came back up."""
        self.attempts: dict[tuple[int, int], SimAttempt] = {}
        self._live: dict[tuple[int, int], SimAttempt] = {}
        """The attempts some task of which may still run (pruned as time advances)."""
        self.start_calls: list[tuple[int, int]] = []
        """Every :meth:`SimBackend.start` call, in order (startfails included)."""
        self.aborted: set[tuple[int, int]] = set()
        """Attempts :meth:`abort` was called for (launched or not)."""
        self.crash_after_launch = 0
        """How many of the next starts launch their tasks and then raise :class:`SimCrash`."""
        self.violations: list[str] = []

    # -- time -----------------------------------------------------------------------------

    def clock(self) -> float:
        """The daemon's clock (``Daemon(clock=world.clock)``)."""
        return self.now

    def advance(self, dt: float) -> None:
        """Move virtual time forward; tasks whose time has come end with their planned status."""
        if dt < 0:
            raise ValueError(f"time only moves forward (dt={dt})")
        self.now += dt
        for attempt in list(self._live.values()):
            for task in attempt.tasks:
                if task.alive and task.end_at <= self.now:
                    task.end(task.end_at, task.code)
        self._prune()

    def _prune(self) -> None:
        for key in [k for k, a in self._live.items() if not a.alive]:
            del self._live[key]

    # -- nodes ----------------------------------------------------------------------------

    def node_down(self, node: str) -> None:
        """The node fails: every task on it is lost; the backend reports it unavailable."""
        if node not in self.down:
            self.down.add(node)
            self.nodes_changed_at = self.now
        for attempt in self.live_attempts():
            for task in attempt.tasks:
                if task.node == node:
                    task.end(self.now, None)
        self._prune()

    def node_up(self, node: str) -> None:
        if node in self.down:
            self.down.discard(node)
            self.nodes_changed_at = self.now

    # -- the backend's operations ---------------------------------------------------------

    def plan_of(self, env: Mapping[str, str], attempt: int) -> Outcome:
        """The outcome of attempt ``attempt`` (1-based) of a job with environment ``env``."""
        plan = parse_plan(env.get(PLAN_ENV, DEFAULT_PLAN))
        return plan[min(attempt, len(plan)) - 1]

    def launch(self, spec: LaunchSpec) -> Handle:
        """Start an attempt's tasks (what :meth:`SimBackend.start` does).

        Raises:
            BackendError: the plan says ``startfail`` (nothing runs).
            SimCrash: armed by :attr:`crash_after_launch`, after the tasks were launched.
        """
        key = (spec.job_id, spec.attempt)
        self._check_launch(spec)
        self.start_calls.append(key)
        outcome = self.plan_of(spec.env, spec.attempt)
        if outcome.kind == "startfail":
            raise BackendError(f"job {spec.job_id}: simulated start failure")
        attempt = SimAttempt(spec.job_id, spec.attempt, tuple(spec.nodes), self.now, outcome)
        if self.shared:
            attempt.whole = spec.exclusive
            attempt.node_gpus = dict(zip(spec.nodes, spec.node_gpus, strict=False))
            if not spec.exclusive:
                attempt.node_cpus = dict(zip(spec.nodes, spec.node_cpus, strict=False))
        tpn = spec.tasks_per_node
        for rank in range(len(spec.nodes) * tpn):
            end_at = self.now + outcome.duration
            code: int | None = outcome.code
            if outcome.kind == "vanish":
                code = None
            elif outcome.kind == "fail" and rank > 0:
                end_at, code = end_at + FAIL_TAIL_S, 0
            task = SimTask(rank, spec.nodes[rank // tpn], end_at, code, outcome.stubborn)
            if task.node in self.down:
                task.end(self.now, None)
            attempt.tasks.append(task)
        self.attempts[key] = attempt
        self._live[key] = attempt
        self.advance(0.0)  # a zero-length task has ended already
        handle: Handle = {"job": spec.job_id, "attempt": spec.attempt}
        if self.crash_after_launch > 0:
            self.crash_after_launch -= 1
            raise SimCrash(f"crashed after launching job {spec.job_id} attempt {spec.attempt}")
        return handle

    def _check_launch(self, spec: LaunchSpec) -> None:
        key = (spec.job_id, spec.attempt)
        job = spec.job_id
        if key in self.start_calls:
            self.violations.append(f"job {job} attempt {spec.attempt} started twice")
        if key in self.aborted:
            self.violations.append(f"job {job} attempt {spec.attempt} started after its abort")
        earlier = [a for j, a in self.start_calls if j == job]
        if earlier and spec.attempt <= max(earlier):
            self.violations.append(
                f"job {job} attempt {spec.attempt} started after attempt {max(earlier)}"
            )
        mine = self.launches_of(job)
        for other in mine:
            if other.alive:
                self.violations.append(
                    f"job {job} attempt {spec.attempt} started while attempt {other.attempt} runs"
                )
            if other.succeeded:
                self.violations.append(
                    f"job {job} attempt {spec.attempt} started after attempt {other.attempt} "
                    "had succeeded (every task exited 0): a rerun of finished work"
                )
        if len(set(spec.nodes)) != len(spec.nodes):
            self.violations.append(f"job {job} attempt {spec.attempt} given {spec.nodes}")
        if self.shared:
            self._check_shares(spec)
        busy = {} if self.shared else self.busy_nodes()
        for node in spec.nodes:
            if node in busy:
                self.violations.append(
                    f"job {job} attempt {spec.attempt} started on {node}, where job "
                    f"{busy[node][0]} attempt {busy[node][1]} still runs"
                )
            if node in self.down:
                self.violations.append(
                    f"job {job} attempt {spec.attempt} started on {node}, which is down"
                )

    def _check_shares(self, spec: LaunchSpec) -> None:
        """A shared cluster: the launch names the GPUs (and, unless exclusive, the cores) of
        each node, as many as asked, none of them used by a live attempt of another job; an
        exclusive attempt shares no node, nor runs on one an exclusive attempt holds."""
        where = f"job {spec.job_id} attempt {spec.attempt}"
        gpus, cpus = spec.node_gpus, spec.node_cpus
        if len(gpus) != len(spec.nodes):
            self.violations.append(f"{where} launched without GPU indices per node: {gpus}")
        elif any(len(set(g)) != len(g) or len(g) < spec.gpus_on_each_node for g in gpus):
            self.violations.append(
                f"{where} asked for {spec.gpus_on_each_node} GPUs a node, was given {gpus}"
            )
        cores = spec.tasks_per_node * spec.cpus_per_task
        if not spec.exclusive and (
            len(cpus) != len(spec.nodes) or any(len(set(c)) != cores for c in cpus)
        ):
            self.violations.append(f"{where} asked for {cores} cores a node, was given {cpus}")
        for i, node in enumerate(spec.nodes):
            mine_gpus = set(gpus[i]) if i < len(gpus) else set()
            mine_cpus = set(cpus[i]) if i < len(cpus) and not spec.exclusive else set()
            for other in self.live_attempts():
                if not other.alive_on(node):
                    continue
                them = f"job {other.job_id} attempt {other.attempt}"
                if spec.exclusive or other.whole:
                    self.violations.append(
                        f"{where} started on {node}, where {them} still runs "
                        f"({'it' if spec.exclusive else 'that one'} is exclusive)"
                    )
                    continue
                both = mine_gpus & set(other.node_gpus.get(node, ()))
                if both:
                    self.violations.append(
                        f"{where} given GPUs {sorted(both)} of {node}, which {them} still uses"
                    )
                both = mine_cpus & set(other.node_cpus.get(node, ()))
                if both:
                    self.violations.append(
                        f"{where} given cores {sorted(both)} of {node}, which {them} still uses"
                    )

    def attempt_of(self, handle: Handle) -> SimAttempt | None:
        return self.attempts.get((int(handle["job"]), int(handle["attempt"])))

    def poll(self, handles: Mapping[int, Handle]) -> dict[int, PollResult]:
        out: dict[int, PollResult] = {}
        for job_id, handle in handles.items():
            attempt = self.attempt_of(handle)
            if attempt is None or attempt.job_id != job_id:
                self.violations.append(f"poll of job {job_id} with a foreign handle {handle}")
                out[job_id] = PollResult(Liveness.LOST, (), 0)
            else:
                out[job_id] = attempt.result()
        return out

    def signal(self, handle: Handle, signum: int) -> None:
        attempt = self.attempt_of(handle)
        if attempt is None:
            self.violations.append(f"signal {signum} to a handle never issued: {handle}")
            return
        attempt.signals.append((self.now, signum))
        for task in attempt.tasks:
            if signum == signal.SIGKILL or (signum == signal.SIGTERM and not task.stubborn):
                task.end(self.now, 128 + signum)
        self._prune()

    def abort(self, job_id: int, attempt: int) -> None:
        """Kill whatever of the attempt still runs (lost) and make sure it never starts."""
        self.aborted.add((job_id, attempt))
        found = self.attempts.get((job_id, attempt))
        if found is not None:
            found.aborted = True
            for task in found.tasks:
                task.end(self.now, None)
        self._prune()

    def ended_attempt(self, job_id: int, attempt: int, ntasks: int) -> PollResult | None:
        """The statuses of an aborted attempt every task of which had ended with a status
        before the abort; None otherwise (never launched, half launched, or killed by it)."""
        found = self.attempts.get((job_id, attempt))
        if found is None or len(found.tasks) != ntasks:
            return None
        if any(t.status is None for t in found.tasks):
            return None
        return PollResult(Liveness.EXITED, tuple(t.status for t in found.tasks), 0)

    # -- views for the checks -------------------------------------------------------------

    def live_attempts(self) -> list[SimAttempt]:
        """The attempts some task of which still runs."""
        return list(self._live.values())

    def busy_nodes(self) -> dict[str, tuple[int, int]]:
        """Node -> (job, attempt) of the live task on it (the launch check reports sharing)."""
        out: dict[str, tuple[int, int]] = {}
        for attempt in self.live_attempts():
            for task in attempt.tasks:
                if task.alive:
                    out[task.node] = attempt.key
        return out

    def launches_of(self, job_id: int) -> list[SimAttempt]:
        """The launched attempts of a job, in order."""
        return sorted(
            (a for a in self.attempts.values() if a.job_id == job_id), key=lambda a: a.attempt
        )


class SimBackend(BaseBackend):
    """The daemon's backend over a :class:`SimWorld`. Handles are ``{"job": id, "attempt": n}``."""

    name: ClassVar[str] = "sim"

    def __init__(self, world: SimWorld) -> None:
        self.world = world
        self.forgotten: list[Handle] = []

    def start(self, spec: LaunchSpec) -> Handle:
        return self.world.launch(spec)

    def poll(self, handles: Mapping[int, Handle]) -> dict[int, PollResult]:
        return self.world.poll(handles)

    def signal(self, handle: Handle, signum: int) -> None:
        self.world.signal(handle, signum)

    def abort_start(self, job_id: int, attempt: int) -> None:
        self.world.abort(job_id, attempt)

    def ended_attempt(self, job_id: int, attempt: int, ntasks: int) -> PollResult | None:
        """After :meth:`abort_start`: the statuses of an attempt every task of which had
        already ended with a status (None otherwise)."""
        return self.world.ended_attempt(job_id, attempt, ntasks)

    def unavailable_nodes(self) -> frozenset[str]:
        return frozenset(self.world.down)

    def forget(self, handle: Handle) -> None:
        self.forgotten.append(handle)


class FaultyStore(Store):
    """A :class:`Store` whose writes fail on demand.

    An armed write runs the caller's statements and then raises SQLAlchemy's
    ``OperationalError`` (as SQLite reports a full disk or a lock at COMMIT) inside the
    transaction, so nothing of it is kept.
    """

    def __init__(self, url: str, *, migrate: bool = False) -> None:
        super().__init__(url, migrate=migrate)
        self.writes = 0
        """Writes attempted so far."""
        self.failed = 0
        """Writes made to fail so far."""
        self._skip = 0
        self._fail = 0
        self._message = DISK_FULL

        self._reader: sqlite3.Connection | None = None

    @property
    def reader(self) -> sqlite3.Connection:
        """A plain sqlite3 connection in autocommit mode for the checks: it sees every committed
        write and costs ~20 us a query (a query through SQLAlchemy's Core: ~300 us)."""
        if self._reader is None:
            database = self.engine.url.database
            assert database, "a SQLite file store"
            self._reader = sqlite3.connect(database, isolation_level=None)
        return self._reader

    def reset(self) -> None:
        """Empty every table and disarm: as fresh as a new store, without its cost (ids
        start at 1 again: the tables' integer keys are not AUTOINCREMENT)."""
        self.disarm()
        self.writes = self.failed = 0
        with self.engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        super().close()

    def arm(self, count: int = 1, *, skip: int = 0, message: str = DISK_FULL) -> None:
        """Let ``skip`` writes through, then fail the ``count`` after them."""
        self._skip, self._fail, self._message = skip, count, message

    def disarm(self) -> None:
        self._skip = self._fail = 0

    @property
    def armed(self) -> bool:
        """A write would fail now or after a few more."""
        return self._fail > 0

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with super().write() as conn:
            yield conn
            self.writes += 1
            if self._fail > 0:
                if self._skip > 0:
                    self._skip -= 1
                else:
                    self._fail -= 1
                    self.failed += 1
                    raise OperationalError("COMMIT", {}, sqlite3.OperationalError(self._message))


class StoreFactory:
    """Fresh :class:`FaultyStore` files, fast: the schema is migrated once into a template
    (alembic), and each store is a copy of it in a temporary folder (tmpfs when there is one).
    """

    _template: ClassVar[Path | None] = None
    _folder: ClassVar[Path | None] = None
    _shared: ClassVar[FaultyStore | None] = None

    @classmethod
    def folder(cls) -> Path:
        if cls._folder is None:
            shm = Path("/dev/shm")
            base = str(shm) if shm.is_dir() else None
            cls._folder = Path(tempfile.mkdtemp(prefix="orch-sim-", dir=base))
            atexit.register(shutil.rmtree, cls._folder, True)
        return cls._folder

    @classmethod
    def template(cls) -> Path:
        if cls._template is None:
            path = cls.folder() / "template.db"
            store = Store(sqlite_url(path))  # migrates
            store.close()
            cls._template = path
        return cls._template

    @classmethod
    def create(cls, name: str = "sim") -> FaultyStore:
        """A store with the current schema and no rows, at ``<tmp>/<name>.db`` (replaced)."""
        path = cls.folder() / f"{name}.db"
        cls.remove(path)
        shutil.copyfile(cls.template(), path)
        return FaultyStore(sqlite_url(path))

    @classmethod
    def shared(cls) -> FaultyStore:
        """The same store for every caller, emptied (:meth:`FaultyStore.reset`): ~0.3 ms
        instead of ~3 ms for a new one. One user at a time (the examples of a test run)."""
        if cls._shared is None:
            cls._shared = cls.create("shared")
        else:
            cls._shared.reset()
        return cls._shared

    @staticmethod
    def remove(path: Path) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    @classmethod
    def dispose(cls, store: Store) -> None:
        """Close ``store`` and delete its files."""
        store.close()
        database = store.engine.url.database
        if database:
            cls.remove(Path(database))
