"""The PJM backend end to end through a real daemon, against the PJM emulator.

Direct mode: the script PJM receives, refusals, labelled output. Pilot mode: jobs packed into
sub-boxes of one allocation (ranks placed by vcoordfile), the allocation given back when idle or
on close, and jobs requeued when the allocation ends under them.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launchers.pjm import PjmBackend, pilot_cluster
from launchers.pjm.text import parse_pjstat, parse_pjsub
from orchestrator.backends import make_backend
from orchestrator.backends.contract import LaunchSpec, Liveness
from orchestrator.exceptions import InvalidRequestError
from orchestrator.resources.cluster import Cluster
from orchestrator.resources.request import parse_shape
from orchestrator.resources.topology import FlatTopology, NodeResources, Torus3DTopology
from orchestrator.scheduling.job import JobState
from tests.contract.backend_contract import ContractHarness, Run
from tests.pjm_emulator import pjm_emu

S = JobState
NODE = NodeResources(cpus=4, memory_mb=4000)
TORUS = Cluster("pjm-emu", Torus3DTopology((4, 6, 4), (2, 3, 2)), NODE)
PILOT = pilot_cluster("2x3x2", NODE)


def pjstat(*args: str) -> dict[str, str]:
    text = subprocess.run(["pjstat", *args], capture_output=True, text=True, check=True).stdout
    return {row.job_id: row.state for row in parse_pjstat(text)}


def reasons(run: Run, job_id: int) -> list[tuple[str, str]]:
    return [(e["new_state"], e["reason"]) for e in run.daemon.store.events_of(job_id)]


def pilot_run(tmp_path: Path, **options: float) -> Run:
    harness = ContractHarness(
        name="pjm-pilot",
        cluster=PILOT,
        make_backend=lambda root: PjmBackend(
            root, mode="pilot", pilot_shape=parse_shape("2x3x2"), **options
        ),
    )
    return Run(harness, tmp_path)


def test_create_checks_its_options(pjm_emulator: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError) as info:
        make_backend("pjm", tmp_path, TORUS, {"queue": "small"})
    assert info.value.field == "backend-opt" and info.value.value == "queue"
    assert "rscgrp" in info.value.reason
    with pytest.raises(InvalidRequestError, match="torus"):
        make_backend("pjm", tmp_path, Cluster("flat", FlatTopology(4)), {"mode": "pilot"})
    with pytest.raises(InvalidRequestError) as info:
        make_backend("pjm", tmp_path, PILOT, {"mode": "pilot", "pilot_shape": "4x6x4"})
    assert info.value.field == "pilot_shape"
    backend = make_backend("pjm", tmp_path, PILOT, {"mode": "pilot", "pilot_idle": "00:02:00"})
    assert isinstance(backend, PjmBackend) and backend.pilot_idle_s == 120
    assert str(backend.pilot_shape) == "2x3x2:mesh"


def test_direct_job_script_asks_for_the_requested_shape(pjm_emulator: Path, tmp_path: Path) -> None:
    harness = ContractHarness(name="pjm-direct", cluster=TORUS, make_backend=PjmBackend)
    run = Run(harness, tmp_path)
    code = "import os; print('hello from', os.environ['RANK'])"
    job_id = run.submit(code, shape="2x2x1:torus", tasks_per_node=2, time=100, nodes=None)
    run.finish(job_id)
    assert run.state(job_id) is S.COMPLETED, reasons(run, job_id)
    folder = tmp_path / "backend" / "jobs" / str(job_id) / "attempt-1"
    script = (folder / "pjm.sh").read_text().splitlines()
    for line in [
        '#PJM -L "node=2x2x1:torus"',
        '#PJM -L "elapse=00:02:40"',  # the walltime plus the margin: the daemon ends it first
        '#PJM --mpi "proc=24"',  # a torus shape takes whole 2x3x2 units: 12 nodes
        '#PJM --mpi "max-proc-per-node=2"',
        "#PJM -X",
    ]:
        assert line in script
    assert script[-1].startswith("mpiexec -vcoordfile ")
    # Two ranks per node, the nodes in the order of the 2x3x2 box, last axis fastest.
    coords = [f"({x},{y},{z})" for x in range(2) for y in range(3) for z in range(2)]
    assert (folder / "vcoord").read_text().split() == [c for c in coords for _ in range(2)]
    out = Path(run.daemon.backend.output_paths(job_id)[0]).read_text().splitlines()
    assert sorted(out) == sorted(f"{r}: hello from {r}" for r in range(24))  # srun --label
    # MASTER_ADDR and MASTER_PORT come from rank 0's node (its host name, a port free there).
    host, port = (folder / "master").read_text().split()
    assert host == socket.gethostname() and 1024 <= int(port) < 65536


def test_direct_job_queued_in_pjm_is_cancelled_with_pjdel(
    pjm_emulator: Path, tmp_path: Path
) -> None:
    # Another job holds the whole emulated machine: ours waits in PJM's queue (QUE).
    blocker = tmp_path / "blocker.sh"
    blocker.write_text('#!/bin/sh\n#PJM -L "node=4x6x4"\nsleep 30\n')
    # Run from tmp_path: PJM writes NAME.JOBID.out / .err into the submission folder.
    out = subprocess.run(
        ["pjsub", str(blocker)], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    blocker_id = parse_pjsub(out.stdout)
    run = Run(ContractHarness(name="pjm", cluster=TORUS, make_backend=PjmBackend), tmp_path)
    job_id = run.submit("pass", nodes=2)
    run.tick_until(lambda: run.state(job_id) is S.RUNNING, "the daemon to start it")
    pjm_id = run.row(job_id)["handle"]["pjm_id"]
    run.tick_until(lambda: pjstat().get(pjm_id) == "QUE", "PJM to queue it")
    run.daemon.cancel(job_id)
    run.finish(job_id)  # no rank ever started: SIGTERM became a pjdel
    assert run.state(job_id) is S.CANCELLED
    assert pjstat("-H", pjm_id) == {pjm_id: "CCL"}
    assert not list((tmp_path / "backend" / "jobs" / str(job_id)).glob("attempt-1/task-*.pid"))
    subprocess.run(["pjdel", blocker_id], capture_output=True, check=True)


def test_node_failure_under_a_direct_job_requeues_it(pjm_emulator: Path, tmp_path: Path) -> None:
    run = Run(ContractHarness(name="pjm", cluster=TORUS, make_backend=PjmBackend), tmp_path)
    code = run.report_code("import time\nif os.environ['ORCH_ATTEMPT'] == '1': time.sleep(60)\n")
    job_id = run.submit(code, nodes=2, retries=0)
    run.tick_until(lambda: len(run.reports_found()) == 2, "both ranks to start")
    pjm_id = run.row(job_id)["handle"]["pjm_id"]
    pjm_emu.node_down(pjm_emulator, pjm_id)  # PJM ends the job with end code 20
    run.finish(job_id)
    assert run.state(job_id) is S.COMPLETED, reasons(run, job_id)
    assert "PREEMPTED" in [s for s, _ in reasons(run, job_id)]  # requeued, no retry spent
    assert run.row(job_id)["attempts"] == 2
    history = subprocess.run(
        ["pjstat", "-H", "--choose", "jid,pc", pjm_id], capture_output=True, text=True, check=True
    )
    assert parse_pjstat(history.stdout)[0].columns["PC"] == "20"


def test_job_that_checkpoints_on_pjm_elapse_is_requeued(pjm_emulator: Path, tmp_path: Path) -> None:
    # No walltime of ours: PJM's elapse (2 s, option elapse) ends the attempt with SIGTERM; the
    # job checkpoints and exits 3 ("requeue me"), then resumes on its next attempt.
    backend = lambda root: PjmBackend(root, elapse_s=2)  # noqa: E731
    run = Run(ContractHarness(name="pjm", cluster=TORUS, make_backend=backend), tmp_path)
    checkpoint = tmp_path / "checkpoint"
    code = (
        "import os, signal, sys, time\n"
        f"ckpt = {str(checkpoint)!r}\n"
        "if os.path.exists(ckpt): sys.exit(0)  # resumed\n"
        "def save(*_):\n"
        "    open(ckpt, 'w').write('step 42')\n"
        "    sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, save)\n"
        "time.sleep(60)\n"
    )
    job_id = run.submit(code, retries=0)
    run.finish(job_id)
    assert run.state(job_id) is S.COMPLETED, reasons(run, job_id)
    assert "PREEMPTED" in [s for s, _ in reasons(run, job_id)]
    assert run.row(job_id)["attempts"] == 2 and checkpoint.read_text() == "step 42"


def test_abort_start_stops_an_attempt_for_good(pjm_emulator: Path, tmp_path: Path) -> None:
    backend = PjmBackend(tmp_path)
    marker = tmp_path / "ran"
    spec = LaunchSpec(
        job_id=7,
        attempt=1,
        argv=[sys.executable, "-c", f"import time; time.sleep(1); open({str(marker)!r}, 'w')"],
        script=None,
        nodes=["t0-0-0"],
    )
    handle = backend.start(spec)
    backend.abort_start(7, 1)  # as a daemon restarted while this attempt was STARTING
    deadline = time.monotonic() + 15
    while backend.poll({7: handle})[7].liveness is Liveness.RUNNING:
        assert time.monotonic() < deadline, "the aborted attempt still runs"
        time.sleep(0.1)
    time.sleep(1.5)
    assert not marker.exists()


def test_direct_job_refused_by_pjm_fails_with_its_message(
    pjm_emulator: Path, tmp_path: Path
) -> None:
    harness = ContractHarness(
        name="pjm-direct", cluster=TORUS, make_backend=lambda root: PjmBackend(root, rscgrp="large")
    )
    run = Run(harness, tmp_path)
    job_id = run.submit("pass", nodes=2)
    run.finish(job_id)
    assert run.state(job_id) is S.FAILED
    assert any("PJM 0054" in r and "lower limit (25)" in r for _, r in reasons(run, job_id))


def test_pilot_packs_jobs_into_sub_boxes_of_one_allocation(
    pjm_emulator: Path, tmp_path: Path
) -> None:
    run = pilot_run(tmp_path, pilot_idle_s=30)
    release = tmp_path / "release"
    body = (
        "import json, os, time\n"
        "e = os.environ\n"
        f"out = {str(tmp_path)!r} + f\"/coord-{{e['ORCH_JOB_ID']}}-{{e['RANK']}}\"\n"
        "report = [e['PJM_EMU_RANK_COORD'], e['ORCH_NODENAME'], e['PJM_JOBID']]\n"
        # Written under another name, then renamed: the test counts the files, then reads them.
        "with open(out + '.part', 'w') as f:\n    f.write(json.dumps(report))\n"
        "os.replace(out + '.part', out + '.json')\n"
        f"while not os.path.exists({str(release)!r}): time.sleep(0.05)\n"
    )
    jobs = [run.submit(body, shape="2x3x1", nodes=None) for _ in range(2)]
    run.tick_until(lambda: len(list(tmp_path.glob("coord-*.json"))) == 12, "both jobs' 12 ranks")
    assert all(run.state(j) is S.RUNNING for j in jobs)
    found = [json.loads(p.read_text()) for p in tmp_path.glob("coord-*.json")]
    coords = {c for c, _, _ in found}
    assert len(coords) == 12  # disjoint sub-boxes covering the 2x3x2 allocation
    # Each rank runs at the coordinates of the node our allocator gave it (t{x}-{y}-{z}).
    assert all(name == "t" + coord.replace(",", "-") for coord, name, _ in found)
    assert len({pjm_id for _, _, pjm_id in found}) == 1  # one PJM job holds them all
    release.touch()
    run.finish(*jobs)
    assert all(run.state(j) is S.COMPLETED for j in jobs)


def test_pilot_ending_under_a_job_requeues_it(pjm_emulator: Path, tmp_path: Path) -> None:
    run = pilot_run(tmp_path, elapse_s=3, pilot_idle_s=30)
    code = "import os, time\nif os.environ['ORCH_ATTEMPT'] == '1': time.sleep(60)\n"
    job_id = run.submit(code, retries=0)
    run.finish(job_id)
    assert run.state(job_id) is S.COMPLETED, reasons(run, job_id)
    states = [s for s, _ in reasons(run, job_id)]
    assert "PREEMPTED" in states  # requeued by the engine, not by the retry policy
    # Attempt 1 ran until its allocation ended; the next ran in a new allocation (on a loaded
    # machine a later attempt may be cut by its 3 s allocation too: each cut is a requeue).
    assert run.row(job_id)["attempts"] >= 2
    assert len(list((tmp_path / "backend" / "pjm" / "pilots").iterdir())) >= 2


def test_pilot_is_given_back_when_idle_and_on_close(pjm_emulator: Path, tmp_path: Path) -> None:
    run = pilot_run(tmp_path, pilot_idle_s=0.5)
    job_id = run.submit("pass")
    run.finish(job_id)
    pilots = tmp_path / "backend" / "pjm" / "pilots"
    first = (pilots / "1" / "pjm_id").read_text().strip()
    deadline = time.monotonic() + 10
    while first in pjstat() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pjstat("-H", first) == {first: "EXT"}  # the agent left: the allocation is back
    # close() while nothing runs gives back the allocation at once (no idle wait).
    backend = run.daemon.backend
    backend.demand(1)
    second = (pilots / "2" / "pjm_id").read_text().strip()
    deadline = time.monotonic() + 10
    while pjstat().get(second) != "RUN" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (pilots / "2" / "agent").exists()
    backend.close()
    deadline = time.monotonic() + 10
    while second in pjstat() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert second not in pjstat()


def test_a_cluster_that_shares_nodes_is_refused_with_pjm(tmp_path: Path) -> None:
    """Issue 15: PJM hands out whole nodes; a daemon on a GPU preset with it would promise
    jobs a share of a node that pjsub cannot give, so it does not start."""
    from orchestrator.daemon.service import Daemon
    from orchestrator.exceptions import ClusterConfigError
    from orchestrator.resources.cluster import load_cluster
    from orchestrator.store import Store

    store = Store(f"sqlite:///{tmp_path / 'orch.db'}")
    with pytest.raises(ClusterConfigError, match="pjm backend gives whole nodes only"):
        Daemon(store, load_cluster("local-gpu"), PjmBackend(tmp_path / "jobs"))
