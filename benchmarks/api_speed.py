"""The daemon's HTTP API, two source trees of this project side by side: submissions per second
and submit-to-RUNNING latency of a real daemon process, measured over raw ``http.client``.

For each tree a daemon is started as a separate process with that tree first on ``PYTHONPATH``
(this repository's venv python runs ``-m orchestrator.daemon``, which is ``orch daemon start
--foreground``, on a flat local cluster, a fresh state folder each time; ``-m orchestrator.cli``
would not do: run as ``__main__`` it lacks the commands that other modules register on
``orchestrator.cli.main``), so the same script compares an older commit's API with the current
one. Per daemon, in this order:

* latency: ``--latency-jobs`` jobs ``sleep 30`` (1 node, not held), one at a time: the time from
  sending the POST until ``GET /api/v1/jobs/ID`` first says RUNNING (polled every ``--poll`` s);
  median and p90; the jobs are then cancelled and their end awaited;
* submissions/s: ``--jobs`` held jobs (``{"argv": ["true"], "nodes": 1, "hold": true}``) per
  client, POSTed back to back over one keep-alive connection per client, with 1 client and with
  ``--clients`` clients (separate processes, started together at a barrier): jobs / wall time.
  Held jobs never run, so only the API and the store are measured.

Rounds alternate the trees (old, new, old, new, ...), each daemon stopped by its pid (SIGTERM)
and its folder removed before the next starts. Prints a table per metric with each round's value,
the medians and their ratio (> 1: new faster, for both kinds of figure), the load average at
start and end, each tree's commit and which ``api.py`` its python imports. Nothing is asserted.
The defaults take about 70 s on a 2-core machine; there the clients share the cores with the
daemon, and the same code against itself gave ratios of 0.96-1.09 for submissions/s and 0.80-1.03
for the latencies (other work running): read smaller differences as noise.

The older tree is a git worktree, e.g.::

    git worktree add -f /tmp/api-old <commit>
    .venv/bin/python benchmarks/api_speed.py --old /tmp/api-old
    git worktree remove --force /tmp/api-old && git worktree prune

Only the standard library is imported here: neither tree's client code is used.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv" / "bin" / "python"
HELD_BODY = json.dumps({"argv": ["true"], "nodes": 1, "hold": True}).encode()
SLEEP_BODY = json.dumps({"argv": ["sleep", "30"], "nodes": 1}).encode()
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL")


# -- HTTP ------------------------------------------------------------------------------------


class Api:
    """One keep-alive connection to a daemon, with its token."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=60)
        self.auth = {"Authorization": f"Bearer {token}"}
        self.closed_by_server = 0

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        headers = dict(self.auth)
        if body is not None:
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.will_close:
            self.closed_by_server += 1
        return resp.status, json.loads(data) if data else None

    def submit(self, body: bytes) -> int:
        status, doc = self.call("POST", "/api/v1/jobs", body)
        if status != 201:
            raise RuntimeError(f"submit: HTTP {status}: {doc}")
        ids = doc["job_ids"]
        return int(ids[0] if isinstance(ids, list) else ids)

    def state(self, job_id: int) -> str:
        status, doc = self.call("GET", f"/api/v1/jobs/{job_id}")
        if status != 200:
            raise RuntimeError(f"show {job_id}: HTTP {status}: {doc}")
        return str(doc["state"])

    def server_header(self) -> str:
        self.conn.request("GET", "/api/v1/health", headers=self.auth)
        resp = self.conn.getresponse()
        resp.read()
        return resp.getheader("Server") or "?"

    def close(self) -> None:
        self.conn.close()


def _submitter(
    host: str,
    port: int,
    token: str,
    count: int,
    barrier: Barrier,
    results: multiprocessing.Queue[tuple[float, float, int] | str],
) -> None:
    """A client process: connect, meet the others at the barrier, submit ``count`` held jobs."""
    try:
        api = Api(host, port, token)
        api.server_header()  # opens the connection before the clock starts
        barrier.wait(60)
        t0 = time.monotonic()
        for _ in range(count):
            api.submit(HELD_BODY)
        t1 = time.monotonic()
        api.close()
        results.put((t0, t1, api.closed_by_server))
    except Exception as e:
        barrier.abort()
        results.put(f"{type(e).__name__}: {e}")


# -- a daemon of one tree --------------------------------------------------------------------


@dataclass
class Daemon:
    """A daemon process of ``tree`` on a fresh temporary folder, stopped by its own pid."""

    tree: Path
    nodes: int
    folder: Path = field(init=False)
    proc: subprocess.Popen[bytes] = field(init=False)
    host: str = field(init=False)
    port: int = field(init=False)
    token: str = field(init=False)

    def start(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="orch-api-bench-"))
        state = self.folder / "state"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.tree), os.environ.get("PYTHONPATH", "")) if p
        )
        argv = [
            str(PYTHON),
            "-m",
            "orchestrator.daemon",  # = orch daemon start --foreground
            "--state-dir",
            str(state),
            "--nodes",
            str(self.nodes),
            "--grace",
            "1",
            "--on-stop",
            "requeue",  # a job left running by a failed run ends with its daemon
        ]
        with open(self.folder / "daemon.log", "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.tree, env=env
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                info = json.loads((state / "daemon.json").read_text())
            except (OSError, ValueError):
                info = None
            if info is not None and info.get("pid") == self.proc.pid:
                url = urlsplit(info["url"])
                self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
                self.token = (state / "token").read_text().strip()
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon of {self.tree} exited:\n{self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"daemon of {self.tree} did not come up:\n{self.log()}")

    def api(self) -> Api:
        return Api(self.host, self.port, self.token)

    def log(self) -> str:
        path = self.folder / "daemon.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if hasattr(self, "proc") and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        if hasattr(self, "folder"):
            shutil.rmtree(self.folder, ignore_errors=True)


# -- the measurements ------------------------------------------------------------------------


def submissions_per_s(daemon: Daemon, clients: int, jobs: int) -> tuple[float, int]:
    """Held jobs per second over ``clients`` processes of ``jobs`` submissions each; and how many
    responses asked to close the connection."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(clients)
    results: multiprocessing.Queue[tuple[float, float, int] | str] = ctx.Queue()
    procs = [
        ctx.Process(
            target=_submitter,
            args=(daemon.host, daemon.port, daemon.token, jobs, barrier, results),
        )
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    got = [results.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    errors = [r for r in got if isinstance(r, str)]
    if errors:
        raise RuntimeError(f"client failed: {errors[0]}\n{daemon.log()}")
    spans = [r for r in got if not isinstance(r, str)]
    start, end = min(s[0] for s in spans), max(s[1] for s in spans)
    return clients * jobs / (end - start), sum(s[2] for s in spans)


def submit_to_running(daemon: Daemon, count: int, poll: float) -> list[float]:
    """Milliseconds from the POST of a ``sleep 30`` until its state reads RUNNING, per job;
    the jobs are cancelled afterwards and their end awaited."""
    api = daemon.api()
    latencies, ids = [], []
    try:
        for _ in range(count):
            t0 = time.monotonic()
            job_id = api.submit(SLEEP_BODY)
            ids.append(job_id)
            while (state := api.state(job_id)) != "RUNNING":
                if state in FINAL:
                    raise RuntimeError(f"job {job_id} ended {state}:\n{daemon.log()}")
                if time.monotonic() - t0 > 60:
                    raise RuntimeError(f"job {job_id} not RUNNING after 60 s:\n{daemon.log()}")
                time.sleep(poll)
            latencies.append((time.monotonic() - t0) * 1000)
    finally:
        for job_id in ids:
            api.call("POST", f"/api/v1/jobs/{job_id}/cancel", b"{}")
        deadline = time.monotonic() + 30
        while ids and time.monotonic() < deadline:
            ids = [i for i in ids if api.state(i) not in FINAL]
            time.sleep(0.05)
        api.close()
    return latencies


@dataclass
class Figures:
    """Per metric, per tree, one value per round."""

    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, metric: str, tree: str, value: float) -> None:
        self.values.setdefault(metric, {"old": [], "new": []})[tree].append(value)


def run_one(tree_name: str, tree: Path, args: argparse.Namespace, figures: Figures) -> str:
    """One daemon of ``tree``: all measurements; returns a line for the progress log."""
    daemon = Daemon(tree, args.nodes)
    t0 = time.monotonic()
    try:
        daemon.start()
        api = daemon.api()
        server = api.server_header()
        for _ in range(20):  # warm-up: imports, first queries
            api.call("GET", "/api/v1/health")
        api.close()
        lat = submit_to_running(daemon, args.latency_jobs, args.poll)
        rate1, closed1 = submissions_per_s(daemon, 1, args.jobs)
        rate_n, closed_n = submissions_per_s(daemon, args.clients, args.jobs)
    finally:
        daemon.stop()
    figures.add("submissions/s, 1 client", tree_name, rate1)
    figures.add(f"submissions/s, {args.clients} clients", tree_name, rate_n)
    figures.add("submit-to-RUNNING median, ms", tree_name, statistics.median(lat))
    figures.add("submit-to-RUNNING p90, ms", tree_name, _p90(lat))
    closed = f", {closed1 + closed_n} responses closed the connection" if closed1 + closed_n else ""
    return (
        f"{tree_name}: server {server!r}, {rate1:.0f} / {rate_n:.0f} submissions/s, "
        f"latency median {statistics.median(lat):.1f} ms{closed} "
        f"({time.monotonic() - t0:.1f} s)"
    )


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def _describe(tree: Path) -> str:
    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(tree), *argv], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else "?"

    dirty = " +uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    probe = subprocess.run(
        [str(PYTHON), "-c", "import orchestrator.daemon.api as m; print(m.__file__)"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
    )
    api = probe.stdout.strip() or "import failed: " + probe.stderr.strip()[-200:]
    return f"{tree} at {git('rev-parse', '--short', 'HEAD')}{dirty} (api: {api})"


def _table(metric: str, per_tree: dict[str, list[float]], higher_is_better: bool) -> None:
    rounds = len(per_tree["old"])
    print(f"\n{metric}")
    print("     " + "".join(f"{'round ' + str(i + 1):>10}" for i in range(rounds)) + "    median")
    medians = {}
    for name in ("old", "new"):
        values = per_tree[name]
        medians[name] = statistics.median(values)
        cells = "".join(f"{v:>10.1f}" for v in values)
        print(f"{name:<5}{cells}{medians[name]:>10.1f}")
    if higher_is_better:
        print(f"new/old of medians: {medians['new'] / medians['old']:.2f} (> 1: new faster)")
    else:
        print(f"old/new of medians: {medians['old'] / medians['new']:.2f} (> 1: new faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="the older tree (a worktree)")
    parser.add_argument("--new", type=Path, default=REPO, help="the newer tree (default: here)")
    parser.add_argument("--rounds", type=int, default=3, help="old+new pairs (default 3)")
    parser.add_argument("--jobs", type=int, default=1000, help="submissions per client (1000)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (4)")
    parser.add_argument("--latency-jobs", type=int, default=20, help="latency samples (20)")
    parser.add_argument("--poll", type=float, default=0.005, help="state poll interval, s")
    parser.add_argument("--nodes", type=int, default=64, help="flat local cluster size (64)")
    args = parser.parse_args()
    if not PYTHON.exists():
        parser.error(f"no venv python at {PYTHON}")
    if args.latency_jobs > args.nodes:
        parser.error("--latency-jobs must not exceed --nodes (the sleeps run side by side)")
    if args.latency_jobs < 2:
        parser.error("--latency-jobs: at least 2 (for a p90)")
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    for name, tree in trees.items():
        if not (tree / "orchestrator" / "daemon").is_dir():
            parser.error(f"--{name} {tree}: not a tree of this project")

    print("command:", shlex.join([sys.executable, *sys.argv]))
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"cpus: {os.cpu_count()}, python: {PYTHON}")
    for name, tree in trees.items():
        print(f"{name}: {_describe(tree)}")
    print(
        f"{args.nodes} nodes; {args.jobs} held submissions per client; "
        f"{args.latency_jobs} latency jobs polled every {args.poll * 1000:g} ms; "
        f"{args.rounds} rounds\n"
    )
    figures = Figures()
    t0 = time.monotonic()
    for i in range(args.rounds):
        for name in ("old", "new"):
            line = run_one(name, trees[name], args, figures)
            print(f"round {i + 1} {line}", flush=True)
    for metric, per_tree in figures.values.items():
        _table(metric, per_tree, higher_is_better=metric.startswith("submissions"))
    print(f"\ntotal {time.monotonic() - t0:.0f} s")
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
