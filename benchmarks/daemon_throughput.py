"""Daemon submission rates and submit-to-running latency, with 10,000 jobs queued.

Phases (each on a fresh daemon process, flat local cluster of 4 nodes, SQLite store):

1. Rates with 10,000 jobs queued behind a job that holds every node: API submissions from one
   client and from 4 parallel clients, the batch endpoint, and ``orch submit`` processes.
2. Submit-to-running latency on an idle cluster: once with an empty queue, once with 10,000
   held jobs in the queue. Server side: RUNNING event time minus submission event time;
   client side: from sending the submission until a poll sees RUNNING.

    .venv/bin/python benchmarks/daemon_throughput.py [--queued 10000] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemon_common import BenchDaemon

TRUE = {"argv": ["true"], "nodes": 1}


def fill(client, n: int, **extra: object) -> None:  # type: ignore[no-untyped-def]
    for k in range(0, n, 5000):
        client.submit_batch([{**TRUE, **extra}] * min(5000, n - k))


def rates(root: Path, queued: int) -> dict[str, float]:
    d = BenchDaemon(root, "--nodes", "4")
    out: dict[str, float] = {}
    try:
        c = d.client()
        (blocker,) = c.submit({"argv": ["sleep", "3600"], "nodes": 4})
        while c.job(blocker)["state"] != "RUNNING":
            time.sleep(0.02)
        t = time.perf_counter()
        fill(c, queued)
        out["batch_jobs_per_s"] = queued / (time.perf_counter() - t)
        n = 1000
        t = time.perf_counter()
        for _ in range(n):
            c.submit(TRUE)
        out["api_1_client_per_s"] = n / (time.perf_counter() - t)

        def work() -> None:
            cc = d.client()
            for _ in range(250):
                cc.submit(TRUE)
            cc.close()

        threads = [threading.Thread(target=work) for _ in range(4)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        out["api_4_clients_per_s"] = 1000 / (time.perf_counter() - t)
        orch = str(Path(sys.executable).parent / "orch")
        env = {**os.environ, "ORCH_STATE_DIR": str(root)}
        n_cli = 20
        t = time.perf_counter()
        for _ in range(n_cli):
            subprocess.run(
                [orch, "submit", "--parsable", "true"], env=env, check=True, capture_output=True
            )
        out["cli_per_s"] = n_cli / (time.perf_counter() - t)
        out["queued_at_end"] = float(len(c.jobs(state="PENDING")))
        tick = c.request("GET", "/metrics")
        out["tick_s_with_queue"] = float(
            next(line.split()[1] for line in tick.splitlines() if line.startswith("orch_tick_s"))
        )
        c.action(blocker, "cancel")
    finally:
        d.stop()
    return out


def latency(root: Path, held: int, n: int = 40) -> dict[str, float]:
    d = BenchDaemon(root, "--nodes", "4")
    try:
        c = d.client()
        if held:
            fill(c, held, hold=True)
        server, client_side = [], []
        for _ in range(n):
            t = time.perf_counter()
            (job,) = c.submit({"argv": ["sleep", "0.05"], "nodes": 1})
            while c.job(job)["state"] not in ("RUNNING", "COMPLETED"):
                time.sleep(0.001)
            client_side.append(time.perf_counter() - t)
            events = c.job(job)["events"]
            running = next(e["time"] for e in events if e["new_state"] == "RUNNING")
            server.append(running - events[0]["time"])
            time.sleep(0.06)
        return {
            "server_median_ms": 1000 * statistics.median(server),
            "server_p95_ms": 1000 * sorted(server)[int(0.95 * n) - 1],
            "client_median_ms": 1000 * statistics.median(client_side),
            "client_p95_ms": 1000 * sorted(client_side)[int(0.95 * n) - 1],
        }
    finally:
        d.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, default=10_000)
    parser.add_argument("--out", type=Path, help="Keep the state folders here.")
    args = parser.parse_args()
    base = args.out or Path(tempfile.mkdtemp(prefix="orch-bench-"))
    results = {
        "rates_with_queue": rates(base / "rates", args.queued),
        "latency_idle_empty_queue": latency(base / "idle", 0),
        "latency_idle_10k_held": latency(base / "held", args.queued),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
