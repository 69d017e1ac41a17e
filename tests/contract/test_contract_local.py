"""The backend contract against the local backend (process groups on this machine)."""

from __future__ import annotations

import pytest

from launchers.local import LocalBackend
from orchestrator.resources.cluster import load_cluster
from orchestrator.scheduling.job import JobState
from tests.contract.backend_contract import BackendContract, ContractHarness, Run


class TestLocalContract(BackendContract):
    @pytest.fixture
    def harness(self) -> ContractHarness:
        return ContractHarness(
            name="local",
            cluster=load_cluster("local"),
            make_backend=LocalBackend,
            gpu_cluster=load_cluster("local-gpu"),
            binds_allocated_gpus=True,
        )

    def test_a_restart_while_the_siblings_stop_keeps_the_failed_tasks_status(
        self, run: Run
    ) -> None:
        # The daemon that saw rank 1 fail and stopped rank 0 (SIGTERM) is gone before the job's
        # end is recorded: the new one sees statuses (143, 7) and must still report rank 1's 7.
        job_id = run.submit_rank_1_failing()
        run.tick_until(
            lambda: job_id in run.daemon.active and run.daemon.active[job_id].failing is not None,
            "rank 1's failure to be seen",
        )
        run.restart()
        run.finish(job_id)
        row = run.row(job_id)
        assert JobState(row["state"]) is JobState.FAILED and row["exit_code"] == 7, row
        assert "task 1 exited with status 7" in row["reason"], row
