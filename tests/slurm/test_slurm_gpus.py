"""GPUs and shared nodes on the Slurm backend: what each request asks of Slurm (script lines and
step options, golden and generated), the ``ORCH_GPUS`` a task gets, and, on the real local Slurm
with 4 (fake) GPUs per node, that Slurm gives each task its own GPUs, accounts them
(``gres/gpu``) and the memory asked, and packs jobs that share a node (direct and pilot)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from launchers.slurm import SlurmBackend
from launchers.slurm.supervisor import gpu_variables
from launchers.slurm.text import SbatchScript, parse_node_jobs, render_sbatch_script
from orchestrator.backends.contract import Handle, LaunchSpec, Liveness, PollResult
from tests.slurm.slurm_cluster import GPUS_PER_NODE, LocalSlurm, wait_idle
from tests.slurm.slurm_daemon import CLUSTER, slurm_text

REPO = Path(__file__).resolve().parents[2]
NAMES = CLUSTER.topology.node_names

REPORT = """
import os, sys, time
folder = sys.argv[1]
line = os.environ.get('CUDA_VISIBLE_DEVICES', 'unset') + '|' + os.environ['ORCH_GPUS']
with open(os.path.join(folder, 'gpus-' + os.environ['RANK']), 'w') as f:
    f.write(line)
# Optionally wait for another job's file: both held their GPUs at the same time.
other = sys.argv[2] if len(sys.argv) > 2 else ''
deadline = time.time() + 20
while other and not os.path.exists(other) and time.time() < deadline:
    time.sleep(0.1)
if other and not os.path.exists(other):
    sys.exit(9)
"""
"""Each task writes ``CUDA_VISIBLE_DEVICES|ORCH_GPUS`` to ``FOLDER/gpus-RANK``."""


def report_spec(
    job_id: int, folder: Path, nodes: list[str], *other: str, **fields: Any
) -> LaunchSpec:
    """A job whose tasks report their GPUs into ``folder`` (and wait for the file ``other``)."""
    folder.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-c", REPORT, str(folder), *other]
    return LaunchSpec(job_id=job_id, attempt=1, argv=argv, script=None, nodes=nodes, **fields)


def seen(folder: Path, ranks: int) -> list[tuple[str, str]]:
    """Per rank, (``CUDA_VISIBLE_DEVICES``, ``ORCH_GPUS``) as the task saw them."""
    pairs = []
    for rank in range(ranks):
        cvd, _, orch = (folder / f"gpus-{rank}").read_text().partition("|")
        pairs.append((cvd, orch))
    return pairs


def wait_ended(
    backend: SlurmBackend, handles: Mapping[int, Handle], timeout_s: float = 60.0
) -> dict[int, PollResult]:
    deadline = time.monotonic() + timeout_s
    results: dict[int, PollResult] = {}
    while time.monotonic() < deadline:
        results = backend.poll(handles)
        if len(results) == len(handles) and all(
            r.liveness is not Liveness.RUNNING for r in results.values()
        ):
            return results
        time.sleep(0.2)
    raise AssertionError(f"jobs still running after {timeout_s}s: {results}")


def accounted(slurm_id: str, timeout_s: float = 15.0) -> dict[str, str]:
    """The job's ``AllocTRES`` from sacct (``{"gres/gpu": "2", "mem": "1000M", ...}``), once it
    has one (the accounting lags a little behind the controller; right after the job's end a
    row's other fields were seen half written)."""
    deadline = time.monotonic() + timeout_s
    tres = ""
    while time.monotonic() < deadline:
        tres = slurm_text("sacct", "-X", "-P", "-n", "-j", slurm_id, "-o", "AllocTRES").strip()
        if "gres/gpu" in tres:
            break
        time.sleep(0.3)
    return dict(item.split("=", 1) for item in tres.split(",") if "=" in item)


@pytest.fixture
def direct(slurm: LocalSlurm, tmp_path: Path) -> Iterator[SlurmBackend]:
    backend = SlurmBackend(tmp_path / "backend", NAMES)
    yield backend
    backend.close()


# -- what each request asks of Slurm (no Slurm needed) -------------------------------------------


def test_gpu_script_golden(check_golden: Callable[[str, str], None]) -> None:
    # A sub-node job: 2 tasks of 1 GPU and 1 core each, 1000 MB, in a named partition; the
    # srun line asks for the same GPUs, bound one per task.
    script = SbatchScript(
        name="train",
        argv=["python", "-I", "-S", "/opt/supervisor.py", "/srv/jobs/7/attempt-1", "--", "train"],
        nodelist=["n3"],
        tasks_per_node=2,
        gpus_per_task=1,
        mem_mb=1000,
        stdout="/srv/jobs/7/stdout",
        stderr="/srv/jobs/7/stderr",
        extra={"--partition": "gpu a", "--comment": "orch-0:7:1"},
        flags=("--no-requeue",),
        srun_options=("--kill-on-bad-exit=0", "--label", "--cpus-per-task=1"),
    )
    check_golden("gpu_job.sh", render_sbatch_script(script))
    per_node = SbatchScript(name="all4", argv=["true"], nodelist=["n1", "n2"], gpus_per_node=4)
    check_golden("gpu_per_node_job.sh", render_sbatch_script(per_node))


def test_negative_amounts_are_refused() -> None:
    with pytest.raises(Exception, match="mem_mb"):
        render_sbatch_script(SbatchScript(name="x", argv=["true"], nodelist=["n1"], mem_mb=-1))


def _script_of(backend: SlurmBackend, spec: LaunchSpec) -> str:
    job = backend.prepare(spec)
    return render_sbatch_script(backend.sbatch_script(job, ["true"]))


def test_direct_script_lines_per_request(tmp_path: Path) -> None:
    backend = SlurmBackend(tmp_path / "b", NAMES, partition="debug")
    shared = _script_of(
        backend,
        LaunchSpec(1, 1, ["true"], None, ["n3"], tasks_per_node=2, cpus_per_task=1,
                   gpus_per_task=1, mem_per_node_mb=1000, exclusive=False),
    )  # fmt: skip
    lines = shared.splitlines()
    assert "#SBATCH --exclusive" not in lines  # a sub-node job shares its node
    assert "#SBATCH --no-requeue" in lines
    for line in ("--gpus-per-task=1", "--mem=1000M", "--cpus-per-task=1", "--partition=debug",
                 "--ntasks-per-node=2", "--nodelist=n3"):  # fmt: skip
        assert f"#SBATCH {line}" in lines, (line, shared)
    assert "#SBATCH --gpus-per-node" not in shared
    srun = lines[-1].split()
    assert srun[:6] == ["srun", "--kill-on-bad-exit=0", "--label", "--cpus-per-task=1",
                        "--gpus-per-task=1", "--gpu-bind=per_task:1"]  # fmt: skip

    # GPUs per node; the job's own partition wins over the backend's; whole nodes.
    whole = _script_of(
        backend,
        LaunchSpec(2, 1, ["true"], None, ["n1", "n2"], gpus_per_node=4, partition="gpu",
                   exclusive=True),
    )  # fmt: skip
    lines = whole.splitlines()
    assert "#SBATCH --exclusive" in lines and "#SBATCH --partition=gpu" in lines
    assert "#SBATCH --gpus-per-node=4" in lines and "--gpus-per-task" not in whole
    assert "--mem" not in whole  # none asked: Slurm's default
    assert lines[-1].split()[4] == "--gpus-per-node=4"

    # No GPUs asked: no GPU option anywhere; the default LaunchSpec is whole nodes, as before.
    plain = _script_of(backend, LaunchSpec(3, 1, ["true"], None, ["n4"]))
    assert "gpu" not in plain and "#SBATCH --exclusive" in plain.splitlines()


def test_pilot_step_options_per_request(tmp_path: Path) -> None:
    backend = SlurmBackend(tmp_path / "b", NAMES, mode="pilot", partition="debug")
    spec = LaunchSpec(1, 1, ["true"], None, ["n3"], tasks_per_node=2, gpus_per_task=2,
                      mem_per_node_mb=1500, exclusive=False, partition="gpu")  # fmt: skip
    argv = backend.step_argv(spec, "41", "/work")
    assert argv[:2] == ["srun", "--jobid=41"]
    wanted = ["--nodelist=n3", "--ntasks=2", "--ntasks-per-node=2", "--cpus-per-task=1",
              "--gpus-per-task=2", "--gpu-bind=per_task:2", "--mem=1500M", "--exact"]  # fmt: skip
    assert [o for o in wanted if o not in argv] == [], argv
    # A step runs in the allocation's partition; it cannot ask for another.
    assert not any(a.startswith(("--partition", "-p")) for a in argv)
    per_node = backend.step_argv(
        LaunchSpec(2, 1, ["true"], None, ["n1"], gpus_per_node=4), "41", "/work"
    )
    assert "--gpus-per-node=4" in per_node and not any("mem" in a for a in per_node)
    none = backend.step_argv(LaunchSpec(3, 1, ["true"], None, ["n1"]), "41", "/work")
    assert not any("gpu" in a for a in none)


@pytest.mark.parametrize(
    ("env", "gpus"),
    [
        # Slurm's own: the task's GPUs as the node numbers them, and as CUDA does.
        ({"SLURM_STEP_GPUS": "2", "CUDA_VISIBLE_DEVICES": "2", "SLURM_JOB_GPUS": "0,1,2,3"}, "2"),
        # Device cgroups renumber CUDA's view from 0: the node's numbers are ORCH_GPUS.
        ({"SLURM_STEP_GPUS": "3", "CUDA_VISIBLE_DEVICES": "0"}, "3"),
        ({"CUDA_VISIBLE_DEVICES": "0,1"}, "0,1"),
        # A step given no GPU in a job holding some inherits the job's SLURM_JOB_GPUS: none.
        ({"SLURM_JOB_GPUS": "0,1,2,3"}, ""),
        ({}, ""),
    ],
)
def test_orch_gpus_from_slurm(env: dict[str, str], gpus: str) -> None:
    assert gpu_variables(env) == {"ORCH_GPUS": gpus}


def test_parse_node_jobs() -> None:
    text = "RUNNING|n[3-4]|orch-ab:1:1\nRUNNING|n4|(null)\nPENDING||x|y\nCOMPLETING|n5|a|b\n"
    assert parse_node_jobs(text) == {
        "n3": [("RUNNING", "orch-ab:1:1")],
        "n4": [("RUNNING", "orch-ab:1:1"), ("RUNNING", "(null)")],
        "n5": [("COMPLETING", "a|b")],
    }


def _preset(name: str) -> dict[str, object]:
    data = yaml.safe_load((REPO / "conf" / "cluster" / f"{name}.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_gpu_preset_is_slurm16_with_gpus_on_shared_nodes() -> None:
    gpu, plain = _preset("slurm16-gpu"), _preset("slurm16")
    assert gpu["shared"] is True
    assert gpu["node"] == {"cpus": 4, "gpus": GPUS_PER_NODE, "memory_mb": 4000}
    assert gpu["switches"] == plain["switches"] and gpu["topology"] == plain["topology"]


# -- on the real local Slurm -----------------------------------------------------------------------


def test_gpu_preset_matches_the_running_slurm(slurm: LocalSlurm) -> None:
    node = _preset("slurm16-gpu")["node"]
    assert isinstance(node, dict)
    shown = slurm_text("scontrol", "show", "node", "n1")
    assert f"CPUTot={node['cpus']} " in shown
    assert f"RealMemory={node['memory_mb']} " in shown
    assert f"Gres=gpu:{node['gpus']}" in shown


def test_each_task_gets_its_own_gpu(direct: SlurmBackend, tmp_path: Path) -> None:
    spec = report_spec(1, tmp_path / "out", ["n3"], tasks_per_node=2, gpus_per_task=1,
                       mem_per_node_mb=1000, exclusive=False)  # fmt: skip
    handle = direct.start(spec)
    result = wait_ended(direct, {1: handle})[1]
    assert (result.liveness, result.exit_codes) == (Liveness.EXITED, (0, 0)), (
        result,
        (direct.paths(1).stderr).read_text(),
    )
    (cvd0, orch0), (cvd1, orch1) = seen(tmp_path / "out", 2)
    assert cvd0 == orch0 and cvd1 == orch1  # no device cgroups here: the same numbers
    assert len(orch0.split(",")) == 1 and len(orch1.split(",")) == 1
    assert orch0 != orch1
    assert {orch0, orch1} <= {str(g) for g in range(GPUS_PER_NODE)}
    # What was asked of Slurm, and what it recorded.
    script = (Path(handle["dir"]) / "sbatch.sh").read_text()
    assert "--exclusive" not in script and "#SBATCH --gpus-per-task=1" in script
    slurm_id = str(handle["slurm_id"])
    job = slurm_text("scontrol", "show", "job", slurm_id)
    assert "MinMemoryNode=1000M" in job and "TresPerTask=gres:gpu:1" in job, job
    tres = accounted(slurm_id)
    assert tres.get("gres/gpu") == "2" and tres.get("cpu") == "2", tres
    assert tres.get("mem") == "1000M", tres


def test_gpus_per_node_are_seen_by_every_task(direct: SlurmBackend, tmp_path: Path) -> None:
    spec = report_spec(1, tmp_path / "out", ["n4"], tasks_per_node=2, gpus_per_node=4,
                       exclusive=False)  # fmt: skip
    handle = direct.start(spec)
    result = wait_ended(direct, {1: handle})[1]
    assert result.exit_codes == (0, 0), direct.paths(1).stderr.read_text()
    all_gpus = ",".join(str(g) for g in range(GPUS_PER_NODE))
    assert seen(tmp_path / "out", 2) == [(all_gpus, all_gpus)] * 2
    tres = accounted(str(handle["slurm_id"]))
    assert tres.get("gres/gpu") == str(GPUS_PER_NODE), tres


def test_a_whole_node_job_asking_no_gpu_gets_none(direct: SlurmBackend, tmp_path: Path) -> None:
    # --exclusive gives the job every GPU of the node, but its tasks asked for none.
    handle = direct.start(report_spec(1, tmp_path / "out", ["n6"]))
    assert wait_ended(direct, {1: handle})[1].exit_codes == (0,)
    assert seen(tmp_path / "out", 1) == [("unset", "")]
    assert "#SBATCH --exclusive" in (Path(handle["dir"]) / "sbatch.sh").read_text()


def test_jobs_share_a_node_and_its_gpus(direct: SlurmBackend, tmp_path: Path) -> None:
    # Two 2-GPU jobs on one 4-GPU node at once, each waiting for the other's file.
    a, b = tmp_path / "a", tmp_path / "b"
    fields: dict[str, Any] = {"gpus_per_task": 2, "mem_per_node_mb": 1500, "exclusive": False}
    handles = {
        1: direct.start(report_spec(1, a, ["n7"], str(b / "gpus-0"), **fields)),
        2: direct.start(report_spec(2, b, ["n7"], str(a / "gpus-0"), **fields)),
    }
    results = wait_ended(direct, handles)
    assert [r.exit_codes for r in results.values()] == [(0,), (0,)]
    (first,), (second,) = seen(a, 1), seen(b, 1)
    assert len(first[1].split(",")) == 2 and len(second[1].split(",")) == 2
    assert not set(first[1].split(",")) & set(second[1].split(","))


def test_a_node_shared_by_our_jobs_only_stays_available(
    direct: SlurmBackend, tmp_path: Path
) -> None:
    ours = direct.start(
        LaunchSpec(1, 1, ["sleep", "30"], None, ["n8"], gpus_per_task=1, exclusive=False)
    )
    foreign = slurm_text(
        "sbatch", "--parsable", "-w", "n9", "-n", "1", "-o", "/dev/null", "--wrap", "sleep 30"
    ).strip()
    try:
        deadline = time.monotonic() + 30
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            out = slurm_text("sinfo", "-h", "-N", "-n", "n8,n9", "-o", "%N|%t")
            states = dict(line.split("|") for line in out.split())
            if states == {"n8": "mix", "n9": "mix"}:
                break
            time.sleep(0.2)
        assert states == {"n8": "mix", "n9": "mix"}, states
        unavailable = direct.unavailable_nodes()
        assert "n8" not in unavailable  # only ours there: the allocator knows what is free
        assert "n9" in unavailable  # another user's job shares it
    finally:
        subprocess.run(["scancel", foreign], check=False)
        direct.signal(ours, signal.SIGKILL)
    wait_idle(["n8", "n9"])


def test_pilot_steps_share_a_node_and_its_gpus(slurm: LocalSlurm, tmp_path: Path) -> None:
    backend = SlurmBackend(tmp_path / "backend", NAMES, mode="pilot", pilot_nodes=1,
                           pilot_time_s=600)  # fmt: skip
    pilot = backend.pilot
    assert pilot is not None
    try:
        backend.demand(1)
        deadline = time.monotonic() + 30
        while not pilot.running and time.monotonic() < deadline:
            backend.unavailable_nodes()  # refreshes the allocation
            time.sleep(0.2)
        assert pilot.running and pilot.slurm_id is not None
        (node,) = pilot.nodes
        a, b = tmp_path / "a", tmp_path / "b"
        # More memory than DefMemPerCPU gives 1 core (250 MB): the allocation holds it all.
        fields: dict[str, Any] = {"gpus_per_task": 2, "mem_per_node_mb": 1500, "exclusive": False}
        handles = {
            1: backend.start(report_spec(1, a, [node], str(b / "gpus-0"), **fields)),
            2: backend.start(report_spec(2, b, [node], str(a / "gpus-0"), **fields)),
        }
        results = wait_ended(backend, handles)
        assert [r.exit_codes for r in results.values()] == [(0,), (0,)], (
            backend.paths(1).stderr.read_text(),
            backend.paths(2).stderr.read_text(),
        )
        (first,), (second,) = seen(a, 1), seen(b, 1)
        assert len(first[1].split(",")) == 2 and len(second[1].split(",")) == 2
        assert not set(first[1].split(",")) & set(second[1].split(","))
        steps = slurm_text("sacct", "-P", "-n", "-j", pilot.slurm_id, "-o", "JobID,AllocTRES")
        # The steps (P.0, P.1), not the allocation (P) or its batch step (P.batch).
        ours = [
            line for line in steps.splitlines() if line.split("|")[0].partition(".")[2].isdigit()
        ]
        assert len(ours) == 2 and all(
            "gres/gpu=2" in line and "mem=1500M" in line for line in ours
        ), steps
        for handle in handles.values():
            backend.forget(handle)
    finally:
        if pilot.slurm_id is not None:
            pilot.release()
