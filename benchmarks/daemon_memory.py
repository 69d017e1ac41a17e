"""Daemon memory and restart time with 100,000 jobs in the store.

Submits N held jobs through the batch endpoint (5,000 per batch), reads the daemon's resident
memory, restarts it (recovery loads every waiting job into memory) and reads it again, with
the time from process start to serving and the SQLite file size.

    .venv/bin/python benchmarks/daemon_memory.py [--jobs 100000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemon_common import BenchDaemon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="orch-mem-")) / "daemon"
    d = BenchDaemon(root, "--nodes", "4")
    out: dict[str, float] = {"rss_empty_mib": d.rss_mib()}
    c = d.client()
    job = {
        "argv": ["python", "train.py", "--seed", "1"],
        "nodes": 1,
        "time": "1:00:00",
        "hold": True,
        "name": "trial",
    }
    t = time.perf_counter()
    for k in range(0, args.jobs, 5000):
        c.submit_batch([job] * min(5000, args.jobs - k))
    out["submit_s"] = time.perf_counter() - t
    out["rss_after_submit_mib"] = d.rss_mib()
    t = time.perf_counter()
    listed = len(c.jobs(state="HELD", limit=1000))
    out["list_1000_s"] = time.perf_counter() - t
    c.close()
    d.stop()
    t = time.perf_counter()
    d = BenchDaemon(root, "--nodes", "4")
    out["restart_to_serving_s"] = time.perf_counter() - t
    time.sleep(1.0)
    out["rss_after_restart_mib"] = d.rss_mib()
    metrics = d.client().request("GET", "/metrics")
    out["jobs_in_store"] = sum(
        float(line.split()[1]) for line in metrics.splitlines() if line.startswith("orch_jobs{")
    )
    out["sqlite_mib"] = (root / "orch.db").stat().st_size / 2**20
    d.stop()
    assert listed == 1000
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
