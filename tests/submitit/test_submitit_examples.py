"""submitit's documented examples (README, docs/examples.md, docs/checkpointing.md), unchanged but
for ``cluster="orch"``, on an embedded scheduler with the local backend."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import submitit


def add(a: int, b: int) -> int:
    return a + b


def final_state(job: submitit.Job[Any]) -> str:
    """The job's state once its processes are gone (its result is written just before)."""
    deadline = time.monotonic() + 20
    while job.state in ("PENDING", "STARTING", "RUNNING") and time.monotonic() < deadline:
        time.sleep(0.05)
    return job.state


def test_addition() -> None:
    # submitit's README.
    executor = submitit.AutoExecutor(folder="log_test", cluster="orch")
    executor.update_parameters(timeout_min=1, slurm_partition="dev")
    job = executor.submit(add, 5, 7)  # will compute add(5, 7)
    print(job.job_id)  # ID of your job

    output = job.result()  # waits for completion and returns output
    assert output == 12  # 5 + 7 = 12...  your addition was computed in the cluster
    assert final_state(job) == "COMPLETED"
    assert Path("log_test", f"{job.job_id}_0_result.pkl").exists()


def test_map_array_and_batch() -> None:
    # docs/examples.md: job arrays.
    a = [1, 2, 3, 4]
    b = [10, 20, 30, 40]
    log_folder = "log_test/%j"
    executor = submitit.AutoExecutor(folder=log_folder, cluster="orch")
    # the following line tells the scheduler to only run
    # at most 2 jobs at once. By default, this is several hundreds
    executor.update_parameters(slurm_array_parallelism=2)
    jobs = executor.map_array(add, a, b)  # just a list of jobs
    assert [job.result() for job in jobs] == [11, 22, 33, 44]
    assert len({job.job_id for job in jobs}) == 4

    jobs = []
    with executor.batch():
        for arg in [5, 6]:
            job = executor.submit(add, arg, 1)
            jobs.append(job)
    assert [job.result() for job in jobs] == [6, 7]


class Counter(submitit.helpers.Checkpointable):
    """Counts to ``n`` in steps of 0.25 s; the count survives a requeue (submitit's
    Checkpointable pickles the callable, its state included, on the signal)."""

    def __init__(self) -> None:
        self.count = 0
        self.starts: list[int] = []

    def __call__(self, n: int) -> tuple[int, list[int]]:
        self.starts.append(self.count)
        while self.count < n:
            time.sleep(0.25)
            self.count += 1
        return self.count, self.starts


def test_checkpointable_job_is_signalled_requeued_and_resumes() -> None:
    # docs/checkpointing.md: a Checkpointable callable; USR2 comes 55 s before the 1-minute
    # walltime (5 s after the start), the job checkpoints, exits 3 and is requeued.
    executor = submitit.AutoExecutor(folder="log_test", cluster="orch")
    executor.update_parameters(timeout_min=1, orch_signal_delay_s=55)
    t0 = time.monotonic()
    job = executor.submit(Counter(), 28)  # 7 s of work: one requeue
    count, starts = job.result()
    elapsed = time.monotonic() - t0
    assert final_state(job) == "COMPLETED"
    assert count == 28
    assert len(starts) == 2 and starts[0] == 0 and 0 < starts[1] < 28, starts
    assert elapsed < 30, elapsed
    scheduler = executor._executor.scheduler  # type: ignore[attr-defined]
    row = scheduler.store.get_job(int(job.job_id))
    assert (row["state"], row["attempts"]) == ("COMPLETED", 2)
    events = [(e["new_state"], e["reason"]) for e in scheduler.store.events_of(row["id"])]
    assert ("PREEMPTED", "checkpointed on the walltime signal (exit 3) (requeue)") in events
    assert "Caught signal SIGUSR2" in (job.stderr() or "")
    assert "Requeued job" in (job.stdout() or "")


def ranks() -> dict[str, Any]:
    env = submitit.JobEnvironment()
    return {
        "global_rank": env.global_rank,
        "local_rank": env.local_rank,
        "num_tasks": env.num_tasks,
        "num_nodes": env.num_nodes,
        "node": env.node,
        "job_id": env.job_id,
        "cluster": env.cluster,
        "world_size": os.environ["WORLD_SIZE"],
        "nodelist": os.environ["ORCH_NODELIST"],
    }


def test_multi_task_job_sees_its_ranks() -> None:
    executor = submitit.AutoExecutor(folder="log_test", cluster="orch")
    executor.update_parameters(timeout_min=1, tasks_per_node=2)
    job = executor.submit(ranks)
    results = job.results()  # one per task, as submitit's
    assert [r["global_rank"] for r in results] == [0, 1]
    assert [r["local_rank"] for r in results] == [0, 1]
    for r in results:
        assert r["num_tasks"] == 2 and r["num_nodes"] == 1 and r["node"] == 0
        assert r["job_id"] == job.job_id and r["cluster"] == "orch"
        assert r["world_size"] == "2" and r["nodelist"]
    assert job.task(1).result()["global_rank"] == 1
