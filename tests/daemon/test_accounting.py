"""Issue 17, accounting: ``orch history`` shows each finished job's CPU time and peak memory,
collected by the task supervisors from the kernel (``wait4``'s rusage of each task)."""

from __future__ import annotations

import json
import re
import sys

import pytest
from daemon_helpers import DaemonProcess, orch, wait_for

from orchestrator.daemon.client import DaemonClient

PY = sys.executable
MIB = 1 << 20

# Each task burns about 0.3 s of CPU and touches 50 MiB (bytes * n writes every page).
BURN = (
    "import time\n"
    f"block = b'x' * (50 * {MIB})\n"
    "t = time.process_time()\n"
    "while time.process_time() - t < 0.3:\n"
    "    pass\n"
    "print(len(block))\n"
)


def _seconds(clock: str) -> float:
    """``[D-]HH:MM:SS[.mmm]`` -> seconds."""
    days, _, rest = clock.rpartition("-")
    hours, minutes, seconds = rest.split(":")
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _mib(size: str) -> float:
    """``812K``, ``52.3M``, ``1.2G`` -> MiB."""
    scale = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2}
    return float(size[:-1]) * scale[size[-1]]


def test_history_shows_cpu_time_and_peak_memory(
    shared_daemon: DaemonProcess, client: DaemonClient
) -> None:
    (job,) = client.submit(
        {"argv": [PY, "-c", BURN], "nodes": 1, "tasks_per_node": 2, "name": "acct-burn"}
    )
    wait_for(lambda: client.job(job)["state"] in ("COMPLETED", "FAILED"), timeout=60)
    doc = client.job(job)
    assert doc["state"] == "COMPLETED", doc

    # The job document: the sum of CPU time, the largest peak, and each task's own.
    tasks = doc["task_usage"]
    assert len(tasks) == 2
    for task in tasks:
        assert task["cpu_s"] >= 0.25, tasks
        assert task["max_rss_mb"] >= 50, tasks
    assert doc["cpu_time_s"] >= 0.5
    assert doc["cpu_time_s"] == pytest.approx(sum(t["cpu_s"] for t in tasks))
    assert doc["max_rss_mb"] == max(t["max_rss_mb"] for t in tasks) >= 50

    # orch history, as sacct's TotalCPU and MaxRSS, in every format.
    out = orch(shared_daemon, "history", "-n", "acct-burn", "--format", "json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d\d\d", row["cputime"]), row
    assert _seconds(row["cputime"]) >= 0.5
    assert re.fullmatch(r"\d+(\.\d)?[KMGT]", row["maxrss"]), row
    assert _mib(row["maxrss"]) >= 50
    csv_text = orch(shared_daemon, "history", "-n", "acct-burn", "--format", "csv").stdout
    header, line = csv_text.splitlines()
    assert header.split(",")[-2:] == ["cputime", "maxrss"]
    assert line.endswith(f",{row['cputime']},{row['maxrss']}")
    table = orch(shared_daemon, "history", "-n", "acct-burn").stdout.splitlines()
    assert table[0].split()[-2:] == ["CPUTIME", "MAXRSS"]
    assert table[1].split()[-2:] == [row["cputime"], row["maxrss"]]

    # From Python: numbers.
    frame = client.history_frame(name="acct-burn")
    assert float(frame["cpu_time_s"].iloc[0]) >= 0.5
    assert float(frame["max_rss_mb"].iloc[0]) >= 50


def test_history_without_usage_shows_dashes(
    shared_daemon: DaemonProcess, client: DaemonClient
) -> None:
    # A command that cannot start leaves no usage (as a job stored before migration 0004).
    (job,) = client.submit({"argv": ["/nonexistent/acct"], "nodes": 1, "name": "acct-none"})
    wait_for(lambda: client.job(job)["state"] in ("COMPLETED", "FAILED"), timeout=60)
    doc = client.job(job)
    assert doc["cpu_time_s"] is None and doc["max_rss_mb"] is None, doc
    out = orch(shared_daemon, "history", "-n", "acct-none", "--format", "json")
    (row,) = json.loads(out.stdout)
    assert (row["cputime"], row["maxrss"]) == ("-", "-")
