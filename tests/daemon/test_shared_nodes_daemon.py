"""Issue 15 on a real daemon and the local backend: jobs share GPU nodes and each task is bound
to what the allocator gave it (the ``local-gpu`` preset: 2 nodes x 8 cores x 4 declared GPUs).

Before: every job took a whole node, ``CUDA_VISIBLE_DEVICES`` was unset, ``--gpus``,
``--exclusive`` and ``--mem 4G`` did not exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_helpers import DaemonProcess, start_daemon, stop_daemon

from orchestrator.daemon.client import ApiError

# Each task writes what binds it, then waits for the test to let it go.
PROBE = (
    "import json, os, sys, time\n"
    "out = {k: os.environ.get(k) for k in ('CUDA_VISIBLE_DEVICES', 'ORCH_GPUS', 'ORCH_CPUS',"
    " 'OMP_NUM_THREADS', 'ORCH_NODENAME', 'LOCAL_RANK')}\n"
    "out['affinity'] = sorted(os.sched_getaffinity(0))\n"
    "open(sys.argv[1] + '.' + os.environ['ORCH_TASK_RANK'], 'w').write(json.dumps(out))\n"
    "while not os.path.exists(sys.argv[2]):\n"
    "    time.sleep(0.05)\n"
)


@pytest.fixture(scope="module")
def gpu_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    daemon = start_daemon(tmp_path_factory.mktemp("gpu"), "--cluster", "local-gpu")
    yield daemon
    stop_daemon(daemon)


def wait_for(predicate, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def probe_job(tmp: Path, name: str, release: Path, **fields: object) -> dict[str, object]:
    script = tmp / "probe.py"
    script.write_text(PROBE)
    return {
        "argv": ["python3", str(script), str(tmp / name), str(release)],
        "name": name,
        "nodes": 1,
        **fields,
    }


def read_tasks(tmp: Path, name: str) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(tmp.glob(f"{name}.*"))]


def test_one_gpu_jobs_pack_and_each_sees_only_its_gpu(
    gpu_daemon: DaemonProcess, tmp_path: Path
) -> None:
    client = gpu_daemon.client()
    release = tmp_path / "release"
    ids = [
        client.submit(probe_job(tmp_path, f"t{i}", release, gpus_per_task=1))[0] for i in range(8)
    ]
    whole = client.submit(probe_job(tmp_path, "whole", release, exclusive=True))[0]
    # All eight run at once: 2 nodes x 4 GPUs (whole nodes would run two).
    wait_for(lambda: len(list(tmp_path.glob("t*.0"))) == 8)
    seen = set()
    for i in range(8):
        (task,) = read_tasks(tmp_path, f"t{i}")
        assert task["CUDA_VISIBLE_DEVICES"] == task["ORCH_GPUS"]
        gpus = str(task["CUDA_VISIBLE_DEVICES"]).split(",")
        assert len(gpus) == 1
        seen.add((task["ORCH_NODENAME"], gpus[0]))
        # One declared core: pinned to one real CPU (declared core c on CPU c mod CPUs).
        (core,) = str(task["ORCH_CPUS"]).split(",")
        available = sorted(os.sched_getaffinity(0))
        assert task["affinity"] == [available[int(core) % len(available)]]
        assert task["OMP_NUM_THREADS"] == "1"
    assert len(seen) == 8, f"a GPU was given twice: {seen}"
    # The exclusive job waits for a whole node.
    assert client.job(whole)["state"] == "PENDING"
    release.touch()
    wait_for(lambda: client.job(whole)["state"] in ("RUNNING", "COMPLETED"))
    wait_for(lambda: client.job(whole)["state"] == "COMPLETED")
    (task,) = read_tasks(tmp_path, "whole")
    assert task["CUDA_VISIBLE_DEVICES"] == "0,1,2,3" and task["ORCH_CPUS"] is None
    assert all(client.job(i)["state"] == "COMPLETED" for i in ids)


def test_two_tasks_split_the_gpus_and_cores_of_their_node(
    gpu_daemon: DaemonProcess, tmp_path: Path
) -> None:
    client = gpu_daemon.client()
    release = tmp_path / "release"
    release.touch()
    job = client.submit(
        probe_job(
            tmp_path,
            "pair",
            release,
            tasks_per_node=2,
            cpus_per_task=2,
            gpus_per_task=2,
            mem="1G",
        )
    )[0]
    wait_for(lambda: client.job(job)["state"] == "COMPLETED")
    tasks = read_tasks(tmp_path, "pair")
    assert [len(str(t["CUDA_VISIBLE_DEVICES"]).split(",")) for t in tasks] == [2, 2]
    assert not set(str(tasks[0]["ORCH_GPUS"]).split(",")) & set(
        str(tasks[1]["ORCH_GPUS"]).split(",")
    )
    assert [t["OMP_NUM_THREADS"] for t in tasks] == ["2", "2"]
    allocations = client.job(job)["allocations"]
    assert allocations and allocations[0]["node"].startswith("gpu")


def test_a_job_without_gpus_sees_none_and_bad_requests_name_their_field(
    gpu_daemon: DaemonProcess, tmp_path: Path
) -> None:
    client = gpu_daemon.client()
    release = tmp_path / "release"
    release.touch()
    job = client.submit(probe_job(tmp_path, "cpu", release))[0]
    wait_for(lambda: client.job(job)["state"] == "COMPLETED")
    (task,) = read_tasks(tmp_path, "cpu")
    assert task["CUDA_VISIBLE_DEVICES"] == ""
    for fields, field in (
        ({"gpus_per_task": 5}, "gpus_per_task"),
        ({"gpus_per_node": 5}, "gpus_per_node"),
        ({"mem": "9G"}, "mem_per_node_mb"),
        ({"mem": "lots"}, "mem"),
        ({"gres": "fpga:1"}, "gres"),
        ({"nodes": 2, "gpus": 3}, "gpus"),
        ({"partition": "nope"}, "partition"),
        ({"resource_type": "rt_HG"}, "resource_type"),
    ):
        with pytest.raises(ApiError) as e:
            client.submit({"argv": ["true"], "nodes": 1, **fields})
        assert e.value.field == field, (fields, e.value)


def test_a_restarted_daemon_keeps_what_each_job_holds_of_a_node(tmp_path: Path) -> None:
    """Killed with four one-GPU jobs on gpu1, the daemon restarts, re-attaches them and gives
    a new job none of their GPUs (the shares come back from the store, not just the nodes)."""
    root = tmp_path / "state"
    daemon = start_daemon(root, "--cluster", "local-gpu")
    release = tmp_path / "release"
    try:
        client = daemon.client()
        for i in range(3):
            client.submit(probe_job(tmp_path, f"r{i}", release, gpus_per_task=1))
        wait_for(lambda: len(list(tmp_path.glob("r*.0"))) == 3)
        daemon.kill()
        daemon = start_daemon(root, "--cluster", "local-gpu")
        client = daemon.client()
        late = client.submit(probe_job(tmp_path, "late", release, gpus_per_task=1))[0]
        wait_for((tmp_path / "late.0").exists)
        held = {
            (t["ORCH_NODENAME"], t["ORCH_GPUS"])
            for i in range(3)
            for t in read_tasks(tmp_path, f"r{i}")
        }
        (task,) = read_tasks(tmp_path, "late")
        assert (task["ORCH_NODENAME"], task["ORCH_GPUS"]) not in held
        # Best fit still: the fourth GPU of the node the three use.
        assert task["ORCH_NODENAME"] == next(iter(held))[0]
        release.touch()
        wait_for(lambda: client.job(late)["state"] == "COMPLETED")
    finally:
        release.touch()
        stop_daemon(daemon)


PARTITIONED = """name: parts
topology: flat
shared: true
node_names: "g1,c1"
groups:
  - {name: gpu, nodes: "g1", node: {cpus: 8, gpus: 4, memory_mb: 8000}}
  - {name: cpu, nodes: "c1", node: {cpus: 16, gpus: 0, memory_mb: 16000}}
"""


def test_partitions_place_filter_and_cancel(tmp_path: Path) -> None:
    (tmp_path / "parts.yaml").write_text(PARTITIONED)
    daemon = start_daemon(tmp_path / "state", "--cluster", str(tmp_path / "parts.yaml"))
    try:
        client = daemon.client()
        held = {"argv": ["true"], "nodes": 1, "hold": True}
        cpu_jobs = [client.submit({**held, "partition": "cpu", "cpus_per_task": 16})[0]]
        gpu_jobs = [client.submit({**held, "gpus_per_node": 4})[0]]  # the default: gpu
        with pytest.raises(ApiError) as e:
            client.submit({**held, "partition": "cpu", "gpus_per_task": 1})
        assert e.value.field == "gpus_per_task" and "partition 'cpu'" in str(e.value)
        orch = [sys.executable, "-m", "orchestrator.cli"]
        where = ["--state-dir", str(daemon.root)]
        listed = subprocess.run(
            [*orch, "queue", *where, "-p", "cpu", "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert [j["id"] for j in json.loads(listed.stdout)] == cpu_jobs
        assert json.loads(listed.stdout)[0]["partition"] == "cpu"
        subprocess.run([*orch, "cancel", *where, "-p", "cpu"], check=True, capture_output=True)
        assert client.job(cpu_jobs[0])["state"] == "CANCELLED"
        assert client.job(gpu_jobs[0])["state"] == "HELD"
        client.action(gpu_jobs[0], "release")
        wait_for(lambda: client.job(gpu_jobs[0])["state"] == "COMPLETED")
        assert client.job(gpu_jobs[0])["allocations"][0]["node"] == "g1"
    finally:
        stop_daemon(daemon)
