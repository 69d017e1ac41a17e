"""The status page in headless Chromium: queue, running jobs and the allocation map (per switch
on a tree, per Z slice on a torus), with a screenshot kept under test-artifacts/."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from daemon_helpers import ARTIFACTS, chromium, start_daemon, stop_daemon, wait_for

TORUS = "name: torus442\ntopology: torus3d\ndims: [4, 4, 2]\nnode: {cpus: 2, memory_mb: 1000}\n"


@pytest.mark.parametrize("kind", ["tree", "torus3d"])
def test_status_page_shows_queue_running_and_map(kind: str, tmp_path: Path) -> None:
    if kind == "tree":
        cluster, jobs = "slurm16", [{"nodes": 6}, {"nodes": 3}, {"nodes": 16}]
    else:
        (tmp_path / "torus.yaml").write_text(TORUS)
        cluster = str(tmp_path / "torus.yaml")
        jobs = [{"shape": "2x2x2:torus"}, {"shape": "1x4x1:mesh"}, {"nodes": 32}]
    daemon = start_daemon(tmp_path / "daemon", "--cluster", cluster)
    try:
        client = daemon.client()
        ids = [
            client.submit(
                {
                    "argv": [sys.executable, "-c", "import time; time.sleep(60)"],
                    "name": f"web<b>{i}</b>",
                    **job,
                }
            )[0]
            for i, job in enumerate(jobs)
        ]
        wait_for(lambda: client.nodes()["allocated"] == (9 if kind == "tree" else 12))
        profile = tmp_path / "profile"
        dom = chromium(daemon.url + "/", profile, "--dump-dom")
        assert 'data-ready="1"' in dom
        busy = re.findall(r'class="node busy"[^>]*data-job="(\d+)"', dom)
        assert len(busy) == client.nodes()["allocated"]
        assert {int(j) for j in busy} == set(ids[:2])
        assert len(re.findall(r'class="node free"', dom)) == (7 if kind == "tree" else 20)
        # The names are text, never markup.
        assert "web&lt;b&gt;0&lt;/b&gt;" in dom and "<b>0</b>" not in dom
        running = re.search(r'<table id="running".*?</table>', dom, re.S)
        queue = re.search(r'<table id="queue".*?</table>', dom, re.S)
        assert running and queue
        assert all(f'data-job-id="{i}"' in running.group(0) for i in ids[:2])
        assert f'data-job-id="{ids[2]}"' in queue.group(0)
        if kind == "tree":
            assert 'data-group="s1"' in dom and 'data-group="s2"' in dom
        else:
            assert 'data-slice="0"' in dom and 'data-slice="1"' in dom
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / f"status-page-{kind}.png"
        shot.unlink(missing_ok=True)
        chromium(daemon.url + "/", profile, f"--screenshot={shot}", "--window-size=1280,900")
        assert shot.stat().st_size > 10_000
    finally:
        stop_daemon(daemon)


def test_status_page_and_orch_nodes_show_what_each_shared_node_runs(tmp_path: Path) -> None:
    """Issue 15: on a cluster that shares nodes, each node's state (MIXED), cores and GPUs in
    use and every job on it, on the page and in ``orch nodes``."""
    daemon = start_daemon(tmp_path / "daemon", "--cluster", "local-gpu")
    try:
        client = daemon.client()
        sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
        ids = [
            client.submit({"argv": sleeper, "nodes": 1, "gpus_per_task": 1, "cpus_per_task": 2})[0]
            for _ in range(3)
        ]
        wait_for(lambda: all(client.job(i)["state"] == "RUNNING" for i in ids))
        usage = client.nodes()["usage"]
        assert [u["state"] for u in usage] == ["MIXED", "IDLE"]
        assert usage[0]["gpus"] == [3, 4] and usage[0]["cpus"] == [6, 8]
        assert usage[0]["jobs"] == ids
        dom = chromium(daemon.url + "/", tmp_path / "profile", "--dump-dom")
        assert re.search(
            r'data-state="MIXED"[^>]*data-jobs="{}"'.format(",".join(map(str, ids))), dom
        )
        assert "GPUs 3/4" in dom and 'data-state="IDLE"' in dom
        text = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "nodes", "--state-dir", str(daemon.root)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        row = next(line for line in text.splitlines() if line.strip().startswith("gpu1"))
        assert "MIXED" in row and "6/8" in row and "3/4" in row
        assert ",".join(map(str, ids)) in row
    finally:
        stop_daemon(daemon)
