"""Random-kill run of the real daemon: SIGKILL at random moments under a mixed workload.

A real ``python -m orchestrator.daemon`` process (``--nodes 4 --grace 1``) gets, from a submitter
thread, a mixed workload submitted with idempotency keys: short successful jobs, jobs that fail
(with 0, 1 or 2 retries), jobs that fail their first attempt(s) and then succeed (by
``ORCH_ATTEMPT``), 2-node jobs, jobs that exceed a short walltime, jobs the script cancels, array
jobs (``0-3%2``) and jobs with ``afterok`` / ``afterany`` dependencies. Meanwhile the daemon is
killed with SIGKILL ``--kills`` times, at random gaps of 0.2-3 s, and restarted on the same state
folder. Once the last restart and the last submission or cancel are behind it, the script adds
no work and waits up to ``--stuck-after`` seconds for every job to end.

Every task appends a line to ``markers/<job id>`` when it starts (attempt, node rank, pid) and
another when it ends successfully, just before exiting 0: these files are the ground truth. The
run measures (each should be 0):

- lost: an acknowledged id missing from the store or the API, or an idempotency key whose
  replies named different ids (every key is submitted once more at the end, as a client whose
  reply was lost would, and must return the same ids and make nothing);
- duplicated: a stored job no acknowledged submission made, an idempotency key stored twice, or
  more rows under one key than the submission makes;
- stuck: a job not in a terminal state ``--stuck-after`` seconds after the quiet point;
- rerun after success: a job whose markers show an attempt that ended successfully on every node
  followed by another start, of any attempt;
- nodes held at the end of the wait (``/api/v1/nodes`` "allocated");
- completed without a run: a COMPLETED job whose markers show no fully successful attempt;
- the store invariants of ``tests/daemon/test_daemon_recovery.py``: the event log replays to the
  stored states, and no node was ever held by two jobs at once;
- submissions the daemon refused, and daemon exits the script did not cause.

It also reports end states (overall and by kind of job), attempts run, restarts and their
duration. Exit status 1 if any of the counts above is not 0. The daemon is stopped at the end
by its own pid, after cancelling what still runs; nothing else is killed.

    .venv/bin/python benchmarks/daemon_random_kill.py [--seed 1] [--jobs 150] [--kills 10]
        [--nodes 4] [--duration-max 1.5] [--stuck-after 60] [--state-dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemon_common import BenchDaemon

from orchestrator.daemon.client import ApiError, DaemonClient
from orchestrator.exceptions import DaemonError, OrchestratorError
from orchestrator.scheduling.job import FINISHED_STATES, JobState
from orchestrator.store import Store, sqlite_url

PY = sys.executable
TERMINAL = {s.value for s in FINISHED_STATES}
LIVE = "PENDING,HELD,STARTING,RUNNING,PREEMPTED"

# The task: a START marker, a sleep, then exit by its mode (an END marker before exiting 0).
# argv: markers folder, sleep seconds, mode (ok | fail | flaky), failing attempts (flaky).
TASK = """\
import os, sys, time
folder, sleep_s, mode, k = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
env = os.environ
attempt = int(env["ORCH_ATTEMPT"])
path = os.path.join(folder, env["ORCH_JOB_ID"])
def mark(what):
    line = f"{what} {attempt} {env.get('ORCH_NODE_RANK', '0')} {os.getpid()} {time.time():.3f}\\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())
    os.close(fd)
mark("START")
time.sleep(sleep_s)
if mode == "fail":
    sys.exit(1)
if mode == "flaky" and attempt <= k:
    sys.exit(3)
mark("END")
"""

# Kinds of submission and their weights.
KINDS: dict[str, float] = {
    "ok": 0.30,
    "ok_2node": 0.10,
    "fail": 0.12,
    "flaky": 0.13,
    "walltime": 0.04,
    "cancel": 0.06,
    "array": 0.08,
    "dependent": 0.17,
}


class CountingClient(DaemonClient):
    """A client that counts the requests it had to resend (the daemon was down)."""

    resent = 0

    def _rediscover(self) -> None:
        self.resent += 1
        super()._rediscover()


@dataclass
class Plan:
    """One submission: its kind, body (without dependency) and idempotency key."""

    index: int
    kind: str
    key: str
    body: dict[str, Any]
    rows: int = 1  # jobs it makes (array elements)
    cancel_after: float | None = None
    depends_on_earlier: str | None = None  # "afterok" / "afterany"


@dataclass
class Shared:
    """What the submitter thread records (read by the main thread once it is done)."""

    acked: dict[str, list[int]] = field(default_factory=dict)
    replies: dict[str, list[list[int]]] = field(default_factory=dict)
    bodies: dict[str, dict[str, Any]] = field(default_factory=dict)
    kind_of: dict[int, str] = field(default_factory=dict)
    rows_of_key: dict[str, int] = field(default_factory=dict)
    rejected: list[str] = field(default_factory=list)
    submit_retries: int = 0
    submits_resent: int = 0
    cancels_sent: int = 0
    cancels_refused: int = 0
    last_work_at: float = 0.0
    errors: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", flush=True)


def make_plans(rng: random.Random, n: int, markers: Path, duration_max: float) -> list[Plan]:
    kinds, weights = list(KINDS), list(KINDS.values())
    plans: list[Plan] = []
    for i in range(n):
        kind = rng.choices(kinds, weights)[0]
        sleep_s = rng.uniform(0.1, duration_max)
        mode, k, nodes, retries = "ok", 0, 1, rng.choice([0, 0, 1])
        extra: dict[str, Any] = {}
        plan = Plan(i, kind, f"rk-{i}", {})
        if kind == "ok_2node":
            nodes = 2
        elif kind == "fail":
            mode, retries = "fail", rng.choice([0, 1, 2])
            sleep_s = rng.uniform(0.1, 0.6)
        elif kind == "flaky":
            mode, k = "flaky", rng.choice([1, 1, 2])
            retries = k + rng.choice([0, 1])
            sleep_s = rng.uniform(0.1, 0.6)
        elif kind == "walltime":
            sleep_s, extra["time"] = 10.0, 2
        elif kind == "cancel":
            sleep_s = 30.0
            plan.cancel_after = rng.uniform(0.3, 4.0)
        elif kind == "array":
            extra["array"] = "0-3%2"
            plan.rows = 4
            sleep_s = rng.uniform(0.1, duration_max / 2)
        elif kind == "dependent":
            plan.depends_on_earlier = rng.choice(["afterok", "afterok", "afterany"])
        argv = [PY, "-S", "-c", TASK, str(markers), f"{sleep_s:.2f}", mode, str(k)]
        plan.body = {
            "argv": argv,
            "nodes": nodes,
            "retries": retries,
            "name": f"{kind}-{i}",
            **extra,
        }
        plans.append(plan)
    return plans


def submit_until_answered(
    client: DaemonClient, body: dict[str, Any], key: str, shared: Shared
) -> list[int] | None:
    """Submit with ``key`` until the daemon answers (a lost reply is retried with the same key)."""
    while True:
        before = client.resent if isinstance(client, CountingClient) else 0
        try:
            ids = client.submit(body, key=key)
            if isinstance(client, CountingClient) and client.resent > before:
                shared.submits_resent += 1
        except DaemonError:
            shared.submit_retries += 1
            time.sleep(0.2)
            continue
        except ApiError as e:
            shared.rejected.append(f"{key}: {e.status} {e.code} {e}")
            return None
        shared.replies.setdefault(key, []).append(ids)
        return ids


def cancel(client: DaemonClient, job_id: int, shared: Shared) -> bool:
    """Cancel ``job_id``; False if the daemon cannot be reached now (try again later)."""
    try:
        client.action(job_id, "cancel")
        shared.cancels_sent += 1
    except ApiError:  # already ended (or a reply lost in a kill: the retry finds it cancelled)
        shared.cancels_refused += 1
    except DaemonError:
        return False
    return True


def submitter(
    root: Path, plans: list[Plan], rng: random.Random, gap_max: float, shared: Shared
) -> None:
    client = CountingClient.from_state_dir(root, retries=30, timeout_s=20.0)
    pending_cancels: list[tuple[float, int]] = []

    def do_due_cancels() -> None:
        now = time.monotonic()
        for item in sorted(pending_cancels):
            if item[0] <= now and cancel(client, item[1], shared):
                pending_cancels.remove(item)
                shared.last_work_at = time.monotonic()

    try:
        for plan in plans:
            body = dict(plan.body)
            if plan.depends_on_earlier:
                earlier = [i for ids in list(shared.acked.values())[-10:] for i in ids]
                if earlier:
                    body["dependency"] = f"{plan.depends_on_earlier}:{rng.choice(earlier)}"
            shared.bodies[plan.key] = body
            ids = submit_until_answered(client, body, plan.key, shared)
            shared.last_work_at = time.monotonic()
            if ids is not None:
                shared.acked[plan.key] = ids
                shared.rows_of_key[plan.key] = plan.rows
                for job_id in ids:
                    shared.kind_of[job_id] = plan.kind
                if plan.cancel_after is not None:
                    pending_cancels.append((time.monotonic() + plan.cancel_after, ids[0]))
            n = len(shared.acked)
            if n % 25 == 0 or n == len(plans):
                log(f"submitted {n}/{len(plans)} (job ids up to {max(shared.kind_of, default=0)})")
            do_due_cancels()
            time.sleep(rng.uniform(0.0, gap_max))
        while pending_cancels:
            do_due_cancels()
            time.sleep(0.05)
        log(f"submitter done: {shared.cancels_sent} cancels sent, {shared.cancels_refused} refused")
    except Exception as e:  # reported with the figures
        shared.errors.append(f"submitter: {type(e).__name__}: {e}")
    finally:
        client.close()
        shared.done.set()


def start(root: Path, nodes: int, failures: list[str] | None = None) -> BenchDaemon:
    """Start the daemon on ``root``; a start that fails is recorded and tried again (3 tries)."""
    for attempt in range(3):
        try:
            return BenchDaemon(root, "--nodes", str(nodes), "--grace", "1")
        except RuntimeError as e:
            log(f"daemon start {attempt + 1} failed: {str(e)[-500:]}")
            if failures is not None:
                failures.append(f"start failed: {str(e)[-200:]}")
    raise SystemExit(f"the daemon does not start; see {root / 'daemon.log'}")


def stop(daemon: BenchDaemon) -> None:
    """Cancel what still runs, then SIGTERM the daemon by its pid (SIGKILL if it hangs)."""
    if daemon.proc.poll() is not None:
        return
    try:
        client = DaemonClient.from_state_dir(daemon.root, retries=3, timeout_s=10.0)
        for job in client.jobs(state=LIVE):
            with contextlib.suppress(ApiError):
                client.action(job["id"], "cancel")
        deadline = time.monotonic() + 15
        while client.nodes()["allocated"] and time.monotonic() < deadline:
            time.sleep(0.1)
        client.close()
    except OrchestratorError as e:
        log(f"while cancelling before the stop: {e}")
    os.kill(daemon.proc.pid, signal.SIGTERM)
    try:
        daemon.proc.wait(60)
    except Exception:
        log(f"daemon {daemon.proc.pid} ignored SIGTERM for 60 s: SIGKILL")
        os.kill(daemon.proc.pid, signal.SIGKILL)
        daemon.proc.wait(30)


def read_markers(path: Path, nodes: int) -> tuple[int, bool, bool, int]:
    """(attempts started, rerun after success, a fully successful attempt, double starts)."""
    started: set[int] = set()
    starts: Counter[tuple[int, int]] = Counter()
    ended: dict[int, set[int]] = {}
    succeeded = rerun = False
    if not path.exists():
        return 0, False, False, 0
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        what, attempt, rank = parts[0], int(parts[1]), int(parts[2])
        if what == "START":
            if succeeded:
                rerun = True
            started.add(attempt)
            starts[(attempt, rank)] += 1
        elif what == "END":
            ended.setdefault(attempt, set()).add(rank)
            if len(ended[attempt]) >= nodes:
                succeeded = True
    doubles = sum(n - 1 for n in starts.values() if n > 1)
    return len(started), rerun, succeeded, doubles


def store_checks(root: Path) -> dict[str, Any]:
    """The store invariants of the recovery test, as counts."""
    store = Store(sqlite_url(root / "orch.db"), migrate=False)
    out: dict[str, Any] = {}
    try:
        rows = store.list_jobs()
        try:
            replay = store.replay_states()
            cache = {int(r["id"]): JobState(r["state"]) for r in rows}
            out["replay_mismatches"] = sum(
                1 for i in set(cache) | set(replay) if cache.get(i) != replay.get(i)
            )
        except OrchestratorError as e:
            out["replay_mismatches"] = -1
            out["replay_error"] = str(e)
        by_node: dict[int, list[tuple[float, float]]] = {}
        unreleased = 0
        for row in rows:
            for a in store.allocation_history(int(row["id"])):
                if a["released_at"] is None:
                    unreleased += 1
                    end = float("inf")
                else:
                    end = float(a["released_at"])
                by_node.setdefault(int(a["node_index"]), []).append((a["allocated_at"], end))
        overlaps = 0
        for spans in by_node.values():
            spans.sort()
            overlaps += sum(1 for (_, e), (s, _) in itertools.pairwise(spans) if e > s)
        out["node_overlaps"] = overlaps
        out["unreleased_after_stop"] = unreleased
        out["rows"] = rows
    finally:
        store.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock)")
    ap.add_argument("--jobs", type=int, default=150, help="submissions (an array makes 4 jobs)")
    ap.add_argument("--kills", type=int, default=10, help="SIGKILLs of the daemon")
    ap.add_argument("--nodes", type=int, default=4, help="the daemon's --nodes")
    ap.add_argument("--duration-max", type=float, default=1.5, help="longest ok job sleep (s)")
    ap.add_argument("--submit-gap-max", type=float, default=0.2, help="max gap between submits")
    ap.add_argument("--stuck-after", type=float, default=60.0, help="wait for terminal (s)")
    ap.add_argument("--state-dir", type=Path, default=None, help="default: a new temp folder")
    ap.add_argument("--keep", action="store_true", help="keep the temp state folder on success")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else time.time_ns() % 10**6
    rng = random.Random(seed)
    temp = args.state_dir is None
    root: Path = args.state_dir or Path(tempfile.mkdtemp(prefix="orch-random-kill-"))
    root = root.resolve()
    markers = root / "markers"
    markers.mkdir(parents=True, exist_ok=True)
    log(f"seed {seed}, state folder {root}, {args.jobs} submissions, {args.kills} kills")

    plans = make_plans(random.Random(seed + 1), args.jobs, markers, args.duration_max)
    daemon = start(root, args.nodes)
    log(f"daemon pid {daemon.proc.pid} up")
    shared = Shared()
    thread = threading.Thread(
        target=submitter,
        args=(root, plans, random.Random(seed + 2), args.submit_gap_max, shared),
        daemon=True,
    )
    thread.start()

    restarts: list[float] = []
    unexpected_exits: list[str] = []
    last_restart = time.monotonic()
    for k in range(args.kills):
        time.sleep(rng.uniform(0.2, 3.0))
        if daemon.proc.poll() is not None:
            unexpected_exits.append(f"pid {daemon.proc.pid} exited {daemon.proc.returncode}")
            log(f"daemon {daemon.proc.pid} exited by itself ({daemon.proc.returncode})")
        else:
            os.kill(daemon.proc.pid, signal.SIGKILL)
            daemon.proc.wait(30)
        old = daemon.proc.pid
        t = time.monotonic()
        daemon = start(root, args.nodes, unexpected_exits)
        last_restart = time.monotonic()
        restarts.append(last_restart - t)
        log(
            f"kill {k + 1}/{args.kills}: SIGKILL pid {old}; restarted pid {daemon.proc.pid} in "
            f"{restarts[-1]:.2f} s ({len(shared.acked)} submissions acknowledged)"
        )
    if not shared.done.is_set():
        log("kills done; waiting for the submitter")
    while not shared.done.wait(1.0):
        if daemon.proc.poll() is not None:
            unexpected_exits.append(f"pid {daemon.proc.pid} exited {daemon.proc.returncode}")
            daemon = start(root, args.nodes, unexpected_exits)
            last_restart = time.monotonic()

    quiet = max(last_restart, shared.last_work_at)
    ids = sorted(i for v in shared.acked.values() for i in v)
    log(f"quiet: no more kills or work; waiting up to {args.stuck_after:g} s for {len(ids)} jobs")
    client = DaemonClient.from_state_dir(root, retries=10, timeout_s=20.0)
    states: dict[int, str] = {}
    all_terminal_after: float | None = None
    nodes_doc: dict[str, Any] = {}
    next_note = time.monotonic() + 10
    # Until every job is terminal and every node free (a cancelled or timed-out job keeps its
    # nodes while its processes drain: SIGTERM, --grace, SIGKILL), or the time is up.
    while True:
        if daemon.proc.poll() is not None:
            unexpected_exits.append(f"pid {daemon.proc.pid} exited {daemon.proc.returncode}")
            log(f"daemon exited by itself ({daemon.proc.returncode}) during the wait: restarting")
            daemon = start(root, args.nodes, unexpected_exits)
        try:
            states = {int(j["id"]): str(j["state"]) for j in client.jobs()}
            nodes_doc = client.nodes()
        except OrchestratorError as e:
            log(f"cannot list jobs or nodes: {e}")
        live = [i for i in ids if states.get(i) not in TERMINAL]
        held = int(nodes_doc.get("allocated", -1))
        waited = time.monotonic() - quiet
        if not live and all_terminal_after is None:
            all_terminal_after = waited
            log(f"every job terminal {all_terminal_after:.1f} s after the quiet point")
        if not live and held == 0:
            log(f"every node free {waited:.1f} s after the quiet point")
            break
        if waited > args.stuck_after:
            log(
                f"{len(live)} jobs not terminal and {held} nodes held "
                f"{args.stuck_after:g} s after the quiet point"
            )
            break
        if time.monotonic() > next_note:
            counts_now = dict(Counter(states.get(i) for i in live))
            log(f"{len(live)} jobs not terminal yet: {counts_now}; {held} nodes held")
            next_note += 10
        time.sleep(0.5)

    stuck = [i for i in ids if states.get(i) not in TERMINAL]
    nodes_held = int(nodes_doc.get("allocated", -1))
    api_docs: dict[int, dict[str, Any]] = {}
    try:
        api_docs = {int(j["id"]): j for j in client.jobs()}
    except OrchestratorError as e:
        log(f"cannot list jobs: {e}")

    # Every key once more, as a client whose reply was lost: same ids, nothing made.
    for key, body in shared.bodies.items():
        if key in shared.acked:
            submit_until_answered(client, body, key, shared)
    bad_keys = [k for k, replies in shared.replies.items() if any(r != replies[0] for r in replies)]
    client.close()
    log(f"replayed {len(shared.acked)} keys: {len(bad_keys)} answered other ids")
    stop(daemon)
    log(f"daemon pid {daemon.proc.pid} stopped")

    checks = store_checks(root)
    rows: list[dict[str, Any]] = checks.pop("rows")
    stored = {int(r["id"]): r for r in rows}
    acked_set = set(ids)
    missing = sorted(acked_set - set(stored)) + sorted(i for i in ids if i not in api_docs)
    extra = sorted(set(stored) - acked_set)
    keys = [str(r["idempotency_key"]) for r in rows if r["idempotency_key"]]
    key_dups = len(keys) - len(set(keys))
    per_base = Counter(k.rpartition(":")[0] for k in keys)
    over_rows = sum(1 for base, n in per_base.items() if n > shared.rows_of_key.get(base, 0))

    attempts_run = 0
    reruns: list[int] = []
    double_starts = 0
    completed_no_run: list[int] = []
    for job_id, row in stored.items():
        started, rerun, succeeded, doubles = read_markers(markers / str(job_id), int(row["nodes"]))
        attempts_run += started
        double_starts += doubles
        if rerun:
            reruns.append(job_id)
        if row["state"] == "COMPLETED" and not succeeded:
            completed_no_run.append(job_id)
    store_attempts = sum(int(r["attempts"] or 0) for r in rows)
    # End states as the wait left them (before the stop cancels what is stuck).
    end_state = {i: states.get(i, "MISSING") for i in ids}
    end_states = Counter(end_state.values())
    by_kind: dict[str, Counter[str]] = {}
    for job_id, state in end_state.items():
        by_kind.setdefault(shared.kind_of.get(job_id, "?"), Counter())[state] += 1

    counts = {
        "lost": len(missing) + len(bad_keys),
        "duplicated": len(extra) + key_dups + over_rows,
        "stuck": len(stuck),
        "rerun_after_success": len(reruns),
        "nodes_held_at_end": nodes_held if nodes_held >= 0 else 1,
        "completed_without_run": len(completed_no_run),
        "event_log_mismatches": abs(int(checks["replay_mismatches"])),
        "node_held_twice": int(checks["node_overlaps"]),
        "submissions_refused": len(shared.rejected),
        "unexpected_daemon_exits": len(unexpected_exits),
    }
    summary: dict[str, Any] = {
        "seed": seed,
        "submissions": args.jobs,
        "acknowledged_submissions": len(shared.acked),
        "acknowledged_jobs": len(ids),
        "stored_jobs": len(stored),
        **counts,
        "restarts": len(restarts),
        "restart_s_median": round(statistics.median(restarts), 2) if restarts else None,
        "restart_s_max": round(max(restarts), 2) if restarts else None,
        "attempts_run": attempts_run,
        "attempts_in_store": store_attempts,
        "attempt_starts_twice": double_starts,
        "submits_resent_by_client": shared.submits_resent,
        "submit_retries_after_daemon_error": shared.submit_retries,
        "cancels_sent": shared.cancels_sent,
        "cancels_refused": shared.cancels_refused,
        "all_terminal_after_s": (
            round(all_terminal_after, 1) if all_terminal_after is not None else None
        ),
        "allocations_unreleased_after_stop": checks["unreleased_after_stop"],
        "end_states": dict(sorted(end_states.items())),
        "end_states_by_kind": {k: dict(sorted(v.items())) for k, v in sorted(by_kind.items())},
        "wall_s": round(time.monotonic() - T0, 1),
    }

    print()
    print(f"{'measure':<36} {'value':>8}")
    print("-" * 45)
    for name in (
        "acknowledged_submissions",
        "acknowledged_jobs",
        "stored_jobs",
        *counts,
        "restarts",
        "restart_s_median",
        "restart_s_max",
        "attempts_run",
        "attempts_in_store",
        "attempt_starts_twice",
        "submits_resent_by_client",
        "submit_retries_after_daemon_error",
        "cancels_sent",
        "cancels_refused",
        "all_terminal_after_s",
        "allocations_unreleased_after_stop",
        "wall_s",
    ):
        flag = "  <-- should be 0" if counts.get(name) else ""
        print(f"{name:<36} {summary[name]!s:>8}{flag}")
    listed = ", ".join(f"{s} {n}" for s, n in sorted(end_states.items()))
    print(f"end states after the wait: {listed}")
    for kind, c in sorted(by_kind.items()):
        print(f"  {kind:<10} " + ", ".join(f"{s} {n}" for s, n in sorted(c.items())))
    details = {
        "missing ids": missing[:20],
        "keys with other ids": bad_keys[:20],
        "extra ids": extra[:20],
        "reruns after success": reruns[:20],
        "completed without run": completed_no_run[:20],
        "refused": shared.rejected[:5],
        "unexpected exits": unexpected_exits[:5],
        "errors": shared.errors[:5],
    }
    for name, items in details.items():
        if items:
            print(f"{name}: {items}")
    if "replay_error" in checks:
        print(f"event log: {checks['replay_error']}")
    for job_id in stuck[:15]:
        doc = api_docs.get(job_id, {})
        row = stored.get(job_id, {})
        print(
            f"stuck {job_id} ({shared.kind_of.get(job_id)}): {end_state[job_id]} "
            f"attempts {row.get('attempts')} retries {row.get('max_retries')}: "
            f"{doc.get('reason') or row.get('reason')}"
        )
    if nodes_held > 0:
        print(f"nodes held at the end: owners {nodes_doc.get('owners')}")
    print(json.dumps(summary, sort_keys=False))

    failed = any(counts.values()) or bool(shared.errors)
    if temp and not failed and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"state folder kept: {root}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
