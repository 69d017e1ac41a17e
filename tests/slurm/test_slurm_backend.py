"""The Slurm backend on the real local Slurm: other users' nodes, node failure, preemption with
a checkpoint, pilot mode (packing, release when idle, requeue when the allocation ends)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from launchers.slurm import SlurmBackend
from orchestrator.backends import make_backend
from orchestrator.exceptions import InvalidRequestError
from orchestrator.resources.hostlist import expand_hostlist
from orchestrator.scheduling.job import JobState
from tests.slurm.slurm_cluster import LocalSlurm, wait_idle
from tests.slurm.slurm_daemon import CLUSTER, SlurmRun, slurm_text

S = JobState


@pytest.fixture
def direct(slurm: LocalSlurm, tmp_path: Path) -> Iterator[SlurmRun]:
    run = SlurmRun(tmp_path)
    yield run
    run.stop()


def counter_code(folder: Path, steps: int = 30) -> str:
    """A program that counts steps into a checkpoint, saves it and exits 3 on SIGUSR1/SIGTERM
    (the "preempted, requeue me" status of sweeps/train.py), and resumes from it."""
    return f"""
import os, signal, sys, time
folder = {str(folder)!r}
ckpt, log = os.path.join(folder, 'ckpt'), os.path.join(folder, 'log')
step = int(open(ckpt).read()) if os.path.exists(ckpt) else 0
def note(text):
    with open(log, 'a') as f:
        f.write(text + '\\n')
note(f"start {{step}} attempt {{os.environ['ORCH_ATTEMPT']}}")
stop = []
signal.signal(signal.SIGUSR1, lambda *a: stop.append(1))
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
while step < {steps}:
    if stop:
        open(ckpt + '.tmp', 'w').write(str(step))
        os.replace(ckpt + '.tmp', ckpt)
        note(f'checkpoint {{step}}')
        sys.exit(3)
    time.sleep(0.1)
    step += 1
    open(os.path.join(folder, 'progress'), 'w').write(str(step))
note(f'done {{step}}')
"""


def progress(folder: Path) -> int:
    try:
        return int((folder / "progress").read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def test_nodes_busy_with_other_users_jobs_are_never_given(direct: SlurmRun) -> None:
    foreign = slurm_text(
        "sbatch", "--parsable", "-w", "n5", "-o", "/dev/null", "--wrap", "sleep 30"
    ).strip()
    try:
        direct.tick_until(lambda: "n5" in direct.backend.unavailable_nodes(), "n5 to be busy")
        # One job per node of the cluster: without the foreign job one would land on n5.
        ids = [direct.submit("import time; time.sleep(1)") for _ in range(CLUSTER.size)]
        direct.finish(*ids)
    finally:
        subprocess.run(["scancel", foreign], check=False)
    assert all(direct.state(j) is S.COMPLETED for j in ids)
    used = [n for j in ids for n in direct.nodes_of_attempts(j)]
    assert len(used) == CLUSTER.size
    assert "n5" not in used


def test_node_failure_requeues_the_job_elsewhere(direct: SlurmRun, tmp_path: Path) -> None:
    code = (
        "import os, time\n"
        f"open(os.path.join({str(tmp_path)!r}, 'started-' + os.environ['ORCH_ATTEMPT']"
        " + '-' + os.environ['RANK']), 'w').close()\n"
        "if os.environ['ORCH_ATTEMPT'] == '1': time.sleep(300)\n"
    )
    job_id = direct.submit(code, nodes=3)
    direct.tick_until(lambda: len(list(tmp_path.glob("started-1-*"))) == 3, "3 tasks to start")
    victim = direct.nodes_of_attempts(job_id)[0].split(",")[-1]
    subprocess.run(
        ["scontrol", "update", f"nodename={victim}", "state=down", "reason=test"], check=True
    )
    try:
        direct.finish(job_id)
        assert direct.state(job_id) is S.COMPLETED, direct.events(job_id)
        states = [s for s, _ in direct.events(job_id)]
        assert "PREEMPTED" in states and "NODE_FAIL" not in states
        row = direct.row(job_id)
        assert row["attempts"] == 2 and row["max_retries"] == 0  # no retry was spent
        second = direct.nodes_of_attempts(job_id)[1].split(",")
        assert victim not in second and len(second) == 3
    finally:
        subprocess.run(["scontrol", "update", f"nodename={victim}", "state=resume"], check=False)
        wait_idle([victim])


def test_preempted_job_checkpoints_and_resumes(direct: SlurmRun, tmp_path: Path) -> None:
    job_id = direct.submit(counter_code(tmp_path))
    direct.tick_until(lambda: progress(tmp_path) >= 5, "the counter to reach 5")
    slurm_id = direct.row(job_id)["handle"]["slurm_id"]
    # The engine's preemption notice (what --signal=USR1@secs sends before the time limit).
    subprocess.run(["scancel", "--signal=USR1", slurm_id], check=True)
    direct.finish(job_id)
    assert direct.state(job_id) is S.COMPLETED, direct.events(job_id)
    log = (tmp_path / "log").read_text().split("\n")
    saved = int(next(line for line in log if line.startswith("checkpoint")).split()[1])
    assert saved >= 5
    assert log[:4] == [
        "start 0 attempt 1",
        f"checkpoint {saved}",
        f"start {saved} attempt 2",
        "done 30",
    ]
    assert direct.row(job_id)["attempts"] == 2
    assert "PREEMPTED" in [s for s, _ in direct.events(job_id)]


class StaleView(SlurmBackend):
    """The Slurm backend whose view of free nodes is stale until ``fresh`` is set: the race
    where a node is taken between our sinfo and our sbatch, staged."""

    fresh = False

    def unavailable_nodes(self) -> frozenset[str]:
        return super().unavailable_nodes() if self.fresh else frozenset()


def test_a_job_slurm_keeps_pending_is_placed_again(slurm: LocalSlurm, tmp_path: Path) -> None:
    names = CLUSTER.topology.node_names
    busy = ",".join(names)  # every node taken by another user, for now
    foreign = slurm_text(
        "sbatch", "--parsable", "-N", str(len(names)), "-w", busy, "--exclusive",
        "-o", "/dev/null", "--wrap", "sleep 60",
    ).strip()  # fmt: skip
    run = SlurmRun(tmp_path)
    backend = StaleView(tmp_path / "stale", names, pending_limit_s=2)
    run.daemon.backend = backend
    try:
        job_id = run.submit("pass")
        run.tick_until(lambda: run.state(job_id) is S.RUNNING, "the job to be handed to Slurm")
        first = run.row(job_id)["handle"]["slurm_id"]
        # Slurm holds it PENDING (its node is busy); past pending_limit it comes back to us.
        run.tick_until(
            lambda: "PREEMPTED" in [s for s, _ in run.events(job_id)], "the job to be requeued"
        )
        subprocess.run(["scancel", foreign], check=True)
        backend.fresh = True
        run.finish(job_id)
        assert run.state(job_id) is S.COMPLETED, run.events(job_id)
        states = [s for s, _ in run.events(job_id)]
        assert states.count("RUNNING") >= 2 and states[-1] == "COMPLETED"
        assert slurm_text("squeue", "-h", "-t", "all", "-j", first, "-o", "%T").startswith(
            "CANCELLED"
        )
    finally:
        subprocess.run(["scancel", foreign], check=False)
        run.stop()


def test_a_program_exiting_3_on_its_own_fails(direct: SlurmRun) -> None:
    job_id = direct.submit("import sys; sys.exit(3)")
    direct.finish(job_id)
    assert direct.state(job_id) is S.FAILED
    assert direct.row(job_id)["attempts"] == 1


def test_pilot_packs_jobs_into_one_allocation_and_releases_it(
    slurm: LocalSlurm, tmp_path: Path
) -> None:
    run = SlurmRun(tmp_path, mode="pilot", pilot_nodes="4", pilot_idle="1", pilot_time="10:00")
    try:
        ids = [run.submit("import time; time.sleep(0.3)") for _ in range(8)]
        ids.append(run.submit("import os; print(os.environ['RANK'])", nodes=2))
        pilots: set[str | None] = set()

        def done() -> bool:
            pilots.add(run.backend.pilot.slurm_id if run.backend.pilot else None)
            return all(run.state(j).is_finished for j in ids) and not run.daemon.draining

        run.tick_until(done, "the jobs to end")
        assert all(run.state(j) is S.COMPLETED for j in ids)
        assert len(pilots - {None}) == 1  # one allocation for all nine jobs
        pilot_id = next(iter(pilots - {None}))
        used = {n for j in ids for text in run.nodes_of_attempts(j) for n in text.split(",")}
        assert 1 < len(used) <= 4
        steps = slurm_text("sacct", "-P", "-n", "-j", pilot_id, "-o", "JobID,JobName")
        ours = [
            line
            for line in steps.splitlines()
            if "." in line.split("|")[0] and run.backend.tag in line
        ]
        assert len(ours) == len(ids)  # every job was a step of the one allocation
        # The controller's view (sacct's NodeList lags while the allocation runs).
        allocated = expand_hostlist(
            slurm_text("squeue", "-h", "-t", "all", "-j", pilot_id, "-o", "%N").strip()
        )
        assert used <= set(allocated)
        # The queue has drained: the allocation is given back after pilot_idle.
        pilot = run.backend.pilot
        assert pilot is not None
        run.tick_until(lambda: pilot.slurm_id is None, "the idle pilot to be released", 20)
        state = slurm_text("squeue", "-h", "-t", "all", "-j", pilot_id, "-o", "%T").strip()
        assert state in ("CANCELLED", "COMPLETING", "")
    finally:
        run.stop()


def test_pilot_end_requeues_its_jobs_which_resume(slurm: LocalSlurm, tmp_path: Path) -> None:
    run = SlurmRun(tmp_path, mode="pilot", pilot_nodes="2", pilot_idle="1")
    work = tmp_path / "work"
    work.mkdir()
    try:
        job_id = run.submit(counter_code(work))
        run.tick_until(lambda: progress(work) >= 5, "the counter to reach 5")
        first_pilot = run.row(job_id)["handle"]["pilot"]
        subprocess.run(["scancel", first_pilot], check=True)  # the allocation ends
        run.finish(job_id)
        assert run.state(job_id) is S.COMPLETED, run.events(job_id)
        log = (work / "log").read_text().split("\n")
        assert log[0] == "start 0 attempt 1" and log[1].startswith("checkpoint")
        assert log[2].startswith("start ") and log[2] != "start 0 attempt 2"
        assert "PREEMPTED" in [s for s, _ in run.events(job_id)]
        # The daemon stops with nothing running: it gives the allocation back at once.
        pilot = run.backend.pilot
        assert pilot is not None and pilot.slurm_id is not None
        held = pilot.slurm_id
        run.daemon.stop()
        assert pilot.slurm_id is None
        state = slurm_text("squeue", "-h", "-t", "all", "-j", held, "-o", "%T").strip()
        assert state.startswith(("CANCELLED", "COMPLETING")), state
    finally:
        run.stop()


def test_a_pilot_near_its_time_limit_takes_no_new_job(slurm: LocalSlurm, tmp_path: Path) -> None:
    # A one-minute allocation that counts as ending 3 s after it starts.
    run = SlurmRun(tmp_path, mode="pilot", pilot_nodes="1", pilot_time="1:00", pilot_margin="57")
    try:
        first = run.submit("import time; time.sleep(5)")
        run.tick_until(lambda: run.state(first) is S.RUNNING, "the first job to run")
        pilot = run.backend.pilot
        assert pilot is not None
        held = pilot.slurm_id
        run.tick_until(lambda: pilot.ending(time.time()), "the allocation to be near its end")
        second = run.submit("pass")
        run.tick_until(lambda: run.state(first).is_finished, "the first job to end")
        # Not placed into the ending allocation: it waited for a fresh one.
        run.finish(second)
        assert run.state(first) is S.COMPLETED and run.state(second) is S.COMPLETED
        starts = [r for s, r in run.events(second) if s == "RUNNING"]
        assert len(starts) == 1
        assert pilot.slurm_id != held
    finally:
        run.stop()


def test_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="pilot_nodes") as info:
        make_backend("slurm", tmp_path, CLUSTER, {"colour": "red"})
    assert info.value.field == "backend-opt"
    with pytest.raises(InvalidRequestError) as info:
        make_backend("slurm", tmp_path, CLUSTER, {"pilot_nodes": "99"})
    assert info.value.field == "pilot_nodes"
    with pytest.raises(InvalidRequestError) as info:
        make_backend("slurm", tmp_path, CLUSTER, {"mode": "magic"})
    assert info.value.field == "mode"
    assert isinstance(make_backend("slurm", tmp_path, CLUSTER, {}), SlurmBackend)
