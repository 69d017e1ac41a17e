"""The daemon's hot store writes: an attempt's two moves (PENDING -> STARTING -> RUNNING, each an
UPDATE of the job in its state plus an event row) and the release of its nodes, one transaction
per job, on SQLite.

Two ways side by side in one run: ``Store.transition``/``Store.release`` (statements built once,
parameters bound per call) and the same SQL built as a fresh statement per call (as the store
did before c4b5e46). Prints milliseconds per job and their ratio.

    .venv/bin/python benchmarks/store_writes.py --jobs 2000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, update

from orchestrator.scheduling.job import JobState
from orchestrator.store import Store, sqlite_url
from orchestrator.store.schema import allocations, events, jobs


def _rows(cluster_id: int, n: int) -> list[dict[str, Any]]:
    row = {
        "cluster_id": cluster_id,
        "name": "",
        "user": "u",
        "account": "",
        "argv": ["true"],
        "script": None,
        "env": {},
        "workdir": None,
        "nodes": 1,
        "shape": None,
        "tasks_per_node": 1,
        "cpus_per_task": 1,
        "gpus_per_task": 0,
        "mem_per_node_mb": 0,
        "walltime_s": None,
        "estimate_s": None,
        "priority": 0,
        "submit_time": 0.0,
        "array_index": None,
        "array_limit": None,
        "dependency": None,
        "max_retries": 0,
        "attempts": 0,
        "not_before": 0.0,
        "state": "PENDING",
        "reason": "submitted",
    }
    return [dict(row) for _ in range(n)]


def _built_per_call(
    conn: Connection, job_id: int, old: str, new: str, reason: str, **fields: Any
) -> None:
    conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id, jobs.c.state == old)
        .values(state=new, reason=reason, **fields)
    )
    conn.execute(
        insert(events).values(job_id=job_id, time=1.0, old_state=old, new_state=new, reason=reason)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per way")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="orch-store-bench-"))
    store = Store(sqlite_url(folder / "orch.db"))
    cluster_id = store.ensure_cluster("bench", "flat", 4, "flat:4")
    with store.write() as conn:
        ids = store.insert_jobs(conn, _rows(cluster_id, 2 * args.jobs), 0.0)
    t0 = time.perf_counter()
    for job_id in ids[: args.jobs]:
        with store.write() as conn:
            _built_per_call(
                conn, job_id, "PENDING", "STARTING", "start", attempts=1, start_time=1.0
            )
            _built_per_call(conn, job_id, "STARTING", "RUNNING", "run", handle={"pid": 1})
            conn.execute(
                update(allocations)
                .where(allocations.c.job_id == job_id, allocations.c.released_at.is_(None))
                .values(released_at=1.0)
            )
    built = (time.perf_counter() - t0) / args.jobs * 1e3
    t0 = time.perf_counter()
    for job_id in ids[args.jobs :]:
        with store.write() as conn:
            store.transition(
                conn,
                job_id,
                JobState.PENDING,
                JobState.STARTING,
                "start",
                1.0,
                attempts=1,
                start_time=1.0,
            )
            store.transition(
                conn, job_id, JobState.STARTING, JobState.RUNNING, "run", 1.0, handle={"pid": 1}
            )
            store.release(conn, job_id, 1.0)
    cached = (time.perf_counter() - t0) / args.jobs * 1e3
    store.close()
    print(f"statement built per call : {built:.3f} ms per job")
    print(f"Store (built once)       : {cached:.3f} ms per job")
    print(f"ratio                    : {built / cached:.2f}x")


if __name__ == "__main__":
    main()
