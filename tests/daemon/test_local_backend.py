"""The local backend: rank and node-list environment, a real 2-rank torch.distributed job,
process groups, re-attachment by pid plus start time, the abort marker, atomic writes."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from launchers.local import LocalBackend
from orchestrator.backends.contract import LaunchSpec, Liveness
from orchestrator.backends.jobfolder import JobPaths
from orchestrator.daemon.client import DaemonClient
from orchestrator.nodeside.files import atomic_write, process_start_ticks
from orchestrator.resources.hostlist import expand_hostlist

PY = sys.executable

ALLREDUCE = """
import os
import torch
import torch.distributed as dist

torch.set_num_threads(1)
dist.init_process_group("gloo")  # env:// from MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
rank = dist.get_rank()
t = torch.arange(4, dtype=torch.float32) * (rank + 1)
dist.all_reduce(t)
line = (f"rank={rank} world={dist.get_world_size()} node={os.environ['ORCH_NODE_RANK']}"
        f" sum={t.tolist()}\\n")
# One write per line: both ranks append to the same file, and print() may write the text and
# the newline separately (unbuffered), which lets the other rank's line land in between.
os.write(1, line.encode())
dist.destroy_process_group()
"""


def test_two_node_job_runs_a_real_torch_allreduce(client: DaemonClient, tmp_path: Path) -> None:
    script = tmp_path / "allreduce.py"
    script.write_text(ALLREDUCE)
    (job,) = client.submit({"argv": [PY, str(script)], "nodes": 2, "time": 120})
    doc = client.wait(job, timeout_s=120)
    err = client.output(job, "stderr")["data"]
    assert doc["state"] == "COMPLETED", err
    data = client.output(job)["data"]
    lines = sorted(data.splitlines())
    # Ranks 1 and 2 times [0, 1, 2, 3], summed over both ranks.
    assert lines == [
        "rank=0 world=2 node=0 sum=[0.0, 3.0, 6.0, 9.0]",
        "rank=1 world=2 node=1 sum=[0.0, 3.0, 6.0, 9.0]",
    ], (repr(data), doc, err)


def test_rank_and_nodelist_environment(client: DaemonClient) -> None:
    keys = [
        "ORCH_JOB_ID",
        "ORCH_NODELIST",
        "ORCH_NUM_NODES",
        "ORCH_NODE_RANK",
        "ORCH_TASKS_PER_NODE",
        "ORCH_NODENAME",
        "MASTER_ADDR",
        "MASTER_PORT",
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
    ]
    # One write per line (os.write): four tasks append to one file, and print() may write the
    # text and its newline separately.
    code = (
        "import os, json; "
        f"os.write(1, (json.dumps({{k: os.environ[k] for k in {keys!r}}}) + '\\n').encode())"
    )
    (job,) = client.submit({"argv": [PY, "-c", code], "nodes": 2, "tasks_per_node": 2})
    assert client.wait(job, 60)["state"] == "COMPLETED"
    envs = [json.loads(line) for line in client.output(job)["data"].splitlines()]
    assert sorted(int(e["RANK"]) for e in envs) == [0, 1, 2, 3]
    for e in envs:
        rank, local = int(e["RANK"]), int(e["LOCAL_RANK"])
        assert e["ORCH_JOB_ID"] == str(job) and e["WORLD_SIZE"] == "4"
        assert e["ORCH_NUM_NODES"] == "2" and e["ORCH_TASKS_PER_NODE"] == "2"
        assert int(e["ORCH_NODE_RANK"]) == rank // 2 and local == rank % 2
        nodes = expand_hostlist(e["ORCH_NODELIST"])
        assert len(nodes) == 2 and e["ORCH_NODENAME"] == nodes[int(e["ORCH_NODE_RANK"])]
        assert e["MASTER_ADDR"] == "127.0.0.1"
    assert len({e["MASTER_PORT"] for e in envs}) == 1


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def _poll_until(backend: LocalBackend, job: int, handle: dict, timeout: float = 20.0):  # type: ignore[no-untyped-def,type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = backend.poll({job: handle})[job]
        if result.liveness is not Liveness.RUNNING:
            return result
        time.sleep(0.02)
    raise AssertionError("still running")


def test_each_task_is_a_process_group_signalled_whole(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    # The task forks a grandchild; a signal to the task's group must reach it too.
    code = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    spec = LaunchSpec(job_id=1, attempt=1, argv=[PY, "-c", code], script=None, nodes=["n0"])
    handle = backend.start(spec)
    pid = handle["tasks"][0][0]
    deadline = time.monotonic() + 10
    while len(_group_members(pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(_group_members(pid)) == 3  # supervisor, python, sleep
    assert os.getpgid(pid) == pid != os.getpgid(0)
    backend.signal(handle, signal.SIGTERM)
    result = _poll_until(backend, 1, handle)
    assert result.liveness is Liveness.EXITED
    assert result.exit_codes == (128 + signal.SIGTERM,)
    deadline = time.monotonic() + 5
    while _group_members(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _group_members(pid) == []


def test_reattach_checks_pid_and_start_time(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    spec = LaunchSpec(
        job_id=2,
        attempt=1,
        argv=[PY, "-c", "import time; time.sleep(0.5)"],
        script=None,
        nodes=["n0"],
    )
    handle = backend.start(spec)
    # A fresh backend (a restarted daemon) finds the job by its handle alone.
    fresh = LocalBackend(tmp_path)
    assert fresh.poll({2: handle})[2].liveness is Liveness.RUNNING
    assert _poll_until(fresh, 2, handle).exit_codes == (0,)
    # A live pid with another start time is another process: the task is lost, not running.
    me = os.getpid()
    impostor = {
        "attempt": 1,
        "dir": str(tmp_path / "nowhere"),
        "tasks": [[me, (process_start_ticks(me) or 0) + 1]],
    }
    assert fresh.poll({3: impostor})[3].liveness is Liveness.LOST


def test_abort_marker_stops_a_late_start(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path)
    paths = JobPaths(tmp_path, 4)
    paths.attempt(1).mkdir(parents=True)
    backend.abort_start(4, 1)
    assert paths.abort_file(1).exists()
    canary = tmp_path / "ran"
    spec = LaunchSpec(job_id=4, attempt=1, argv=["touch", str(canary)], script=None, nodes=["n0"])
    handle = backend.start(spec)
    result = _poll_until(backend, 4, handle)
    assert result.liveness is Liveness.LOST and result.exit_codes == (None,)
    assert not canary.exists()


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "f"
    for i in range(20):
        atomic_write(target, f"v{i}", mode=0o600)
    assert target.read_text() == "v19"
    assert os.stat(target).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_supervisors_come_from_the_spawner_and_survive_it(tmp_path: Path) -> None:
    """Each task's supervisor is forked by the backend's spawner (not a new interpreter), leads
    its own session, and keeps running when the spawner goes; a new spawner serves the next
    task, and without the spawner the backend starts supervisors itself."""
    backend = LocalBackend(tmp_path)
    sleeper = [PY, "-c", "import time; time.sleep(30)"]
    first = backend.start(LaunchSpec(1, 1, sleeper, None, ["n0"]))
    pid = first["tasks"][0][0]
    spawner = _parent(pid)
    assert spawner != os.getpid() and os.getpgid(pid) == pid
    with open(f"/proc/{spawner}/cmdline", "rb") as f:
        assert b"local/spawner.py" in f.read()
    os.kill(spawner, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while process_start_ticks(spawner) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert backend.poll({1: first})[1].liveness is Liveness.RUNNING  # the task lives on
    quick = backend.start(LaunchSpec(2, 1, [PY, "-c", "print('again')"], None, ["n1"]))
    assert _poll_until(backend, 2, quick).exit_codes == (0,)
    assert "again" in JobPaths(tmp_path, 2).stdout.read_text()
    backend.signal(first, signal.SIGTERM)
    assert _poll_until(backend, 1, first).exit_codes == (128 + signal.SIGTERM,)
    backend.close()

    plain = LocalBackend(tmp_path / "plain", spawner=False)
    handle = plain.start(LaunchSpec(3, 1, [PY, "-c", "pass"], None, ["n0"]))
    assert _parent(handle["tasks"][0][0]) == os.getpid()
    assert _poll_until(plain, 3, handle).exit_codes == (0,)
