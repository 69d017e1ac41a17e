"""The contract every backend keeps, as the daemon sees it.

One suite of behaviour tests run against each backend (local, Slurm, PJM emulated, Ray): a real
in-process :class:`~orchestrator.daemon.service.Daemon` over a real backend, ticked on the wall
clock. A backend plugs in with a test file ``test_contract_<name>.py``::

    class TestSlurmContract(BackendContract):
        @pytest.fixture
        def harness(self, ...) -> ContractHarness:
            return ContractHarness(name="slurm", cluster=load_cluster("slurm16"),
                                   make_backend=lambda root: SlurmBackend(root, ...))

Every task the tests start runs ``python -c`` code and reports through files in a folder the test
owns (every engine here runs its tasks on this machine, so the folder is shared), besides the
stdout and stderr the backend keeps.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orchestrator.backends.contract import BaseBackend
from orchestrator.daemon.service import Daemon, DaemonConfig
from orchestrator.daemon.spec import JobSpec
from orchestrator.resources.cluster import Cluster
from orchestrator.scheduling.job import JobState
from orchestrator.store import Store, sqlite_url

__all__ = ["BackendContract", "ContractHarness"]

S = JobState


@dataclass
class ContractHarness:
    """How to run the contract against one backend.

    Attributes:
        name: The backend's name, for messages.
        cluster: The daemon's cluster (its node names are the engine's).
        make_backend: A fresh backend whose state lives under the given folder; called again
            on the same folder to model a daemon restart.
        nodes: Nodes of the multi-node test (at most the cluster's).
        tasks_per_node: Tasks per node of the multi-node test.
        timeout_s: How long one job may take to reach its end (engines start slowly).
        tick_s: Pause between ticks.
        python: The interpreter the tasks run.
        gpu_cluster: A cluster that shares nodes with GPUs, on the same engine (None: the
            backend gives whole nodes only, or binds no GPUs).
        binds_allocated_gpus: The backend binds each task to the GPU indices our allocator
            chose (the local backend); engines that choose their own (Slurm, Ray) do not.
    """

    name: str
    cluster: Cluster
    make_backend: Callable[[Path], BaseBackend]
    nodes: int = 2
    tasks_per_node: int = 2
    timeout_s: float = 60.0
    tick_s: float = 0.05
    python: str = sys.executable
    gpu_cluster: Cluster | None = None
    binds_allocated_gpus: bool = False


class Run:
    """A daemon over the harness's backend with a state folder of its own."""

    def __init__(self, harness: ContractHarness, root: Path) -> None:
        self.harness = harness
        self.root = root
        self.reports = root / "reports"
        self.reports.mkdir(parents=True, exist_ok=True)
        self.daemon = self.open()

    def open(self) -> Daemon:
        store = Store(sqlite_url(self.root / "orch.db"))
        backend = self.harness.make_backend(self.root / "backend")
        return Daemon(store, self.harness.cluster, backend, DaemonConfig(grace_s=2.0))

    def restart(self) -> dict[str, int]:
        """Drop the daemon without stopping it (as a crash would) and recover a new one."""
        self.daemon.store.close()
        self.daemon = self.open()
        return self.daemon.recover()

    def submit(self, code: str, *args: str, **fields: Any) -> int:
        """Submit ``python -c code args...`` with the submission ``fields``."""
        argv = [self.harness.python, "-c", code, *args]
        spec = JobSpec.from_mapping({"argv": argv, "nodes": 1, **fields})
        return self.daemon.submit([spec])[0][0]

    def submit_rank_1_failing(self) -> int:
        """A 2-task job whose rank 1 exits 7 at once while rank 0 would sleep for 300 s."""
        code = "import os, sys, time\nif os.environ['RANK'] == '1': sys.exit(7)\ntime.sleep(300)\n"
        return self.submit(code, nodes=2, tasks_per_node=1)

    def state(self, job_id: int) -> JobState:
        return JobState(self.daemon.store.get_job(job_id)["state"])

    def row(self, job_id: int) -> dict[str, Any]:
        return self.daemon.store.get_job(job_id)

    def tick_until(
        self, done: Callable[[], bool], what: str, timeout_s: float | None = None
    ) -> None:
        deadline = time.monotonic() + (timeout_s or self.harness.timeout_s)
        while time.monotonic() < deadline:
            self.daemon.tick(time.time())
            if done():
                return
            time.sleep(self.harness.tick_s)
        events = {
            j: [(e["new_state"], e["reason"]) for e in self.daemon.store.events_of(j)]
            for j in self.daemon.store.replay_states()
        }
        raise AssertionError(f"{self.harness.name}: timed out waiting for {what}; events: {events}")

    def finish(self, *job_ids: int) -> None:
        """Tick until the jobs have ended and every node is free again."""
        self.tick_until(
            lambda: all(self.state(j).is_finished for j in job_ids) and not self.daemon.draining,
            f"jobs {job_ids} to end",
        )

    def report_code(self, body: str = "") -> str:
        """Python code for a task: write its environment to reports/<RANK>.json, then ``body``."""
        return (
            "import json, os, sys\n"
            f"folder = {str(self.reports)!r}\n"
            "rank = os.environ.get('RANK', '?')\n"
            "keys = [k for k in os.environ if k.startswith(('ORCH_', 'SLURM_', 'PJM_'))]\n"
            "keys += ['RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'GROUP_RANK',\n"
            "         'MASTER_ADDR', 'MASTER_PORT', 'CUDA_VISIBLE_DEVICES']\n"
            "env = {k: os.environ.get(k) for k in keys}\n"
            "env['pid'] = os.getpid()\n"
            "tmp = os.path.join(folder, f'.{rank}.tmp')\n"
            "open(tmp, 'w').write(json.dumps(env))\n"
            "os.replace(tmp, os.path.join(folder, f'{rank}.json'))\n" + body
        )

    def reports_found(self) -> dict[int, dict[str, Any]]:
        found = {}
        for path in self.reports.glob("*.json"):
            found[int(path.stem)] = json.loads(path.read_text())
        return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it has ended all the same.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class BackendContract:
    """The behaviour every backend owes the daemon. Subclasses provide ``harness``."""

    @pytest.fixture
    def harness(self) -> ContractHarness:
        raise NotImplementedError("a backend's contract test defines the harness fixture")

    @pytest.fixture
    def run(self, harness: ContractHarness, tmp_path: Path) -> Run:
        return Run(harness, tmp_path)

    def test_multi_node_job_gets_rank_variables(self, run: Run) -> None:
        h = run.harness
        job_id = run.submit(run.report_code(), nodes=h.nodes, tasks_per_node=h.tasks_per_node)
        run.finish(job_id)
        assert run.state(job_id) is S.COMPLETED, run.row(job_id)
        world = h.nodes * h.tasks_per_node
        reports = run.reports_found()
        assert sorted(reports) == list(range(world))
        masters = {(r["MASTER_ADDR"], r["MASTER_PORT"]) for r in reports.values()}
        assert len(masters) == 1 and None not in next(iter(masters))
        for rank, env in reports.items():
            assert env["WORLD_SIZE"] == str(world)
            assert env["LOCAL_WORLD_SIZE"] == str(h.tasks_per_node)
            assert env["ORCH_TASK_RANK"] == str(rank)
            assert env["ORCH_NODE_RANK"] == str(rank // h.tasks_per_node)
            assert env["GROUP_RANK"] == str(rank // h.tasks_per_node)
            assert env["LOCAL_RANK"] == str(rank % h.tasks_per_node)
            assert env["ORCH_JOB_ID"] == str(job_id)
            assert env["ORCH_NUM_NODES"] == str(h.nodes)
        # Every task knows the nodes our allocator chose, in node-rank order.
        lists = {env["ORCH_NODELIST"] for env in reports.values()}
        assert len(lists) == 1
        by_node = {env["ORCH_NODE_RANK"]: env["ORCH_NODENAME"] for env in reports.values()}
        assert len(set(by_node.values())) == h.nodes

    def test_stdout_and_stderr_are_kept_apart(self, run: Run) -> None:
        h = run.harness
        code = (
            "import os, sys\n"
            "r = os.environ['RANK']\n"
            "sys.stdout.write(f'out-of-rank-{r}\\n'); sys.stdout.flush()\n"
            "sys.stderr.write(f'err-of-rank-{r}\\n'); sys.stderr.flush()\n"
        )
        job_id = run.submit(code, nodes=h.nodes, tasks_per_node=1)
        run.finish(job_id)
        assert run.state(job_id) is S.COMPLETED, run.row(job_id)
        paths = run.daemon.backend.output_paths(job_id)
        assert paths is not None, f"{h.name} keeps no output on this machine"
        out, err = (Path(p).read_text() for p in paths)
        for rank in range(h.nodes):
            assert f"out-of-rank-{rank}" in out and f"out-of-rank-{rank}" not in err
            assert f"err-of-rank-{rank}" in err and f"err-of-rank-{rank}" not in out

    def test_crlf_in_argv_and_env_reach_the_task_intact(self, run: Run) -> None:
        # Newlines are legitimate in arguments and values (``python -c`` programs, PEM keys),
        # and so are the characters a shell would act on: every backend passes them unchanged.
        seen = run.root / "seen.json"
        args = ["a\nb\r\nc", "\r\n", "", "tail\n", 'it\'s $HOME `id` \\ "q" *']
        env = {
            "PEM": "-----BEGIN-----\r\nabc\n-----END-----\n",
            "LONE_CR": "x\ry",
            "SHELLISH": "$(id) 'q' ${HOME}",
        }
        code = (
            "import json, os, sys\n"
            f"names = {sorted(env)!r}\n"
            f"open({str(seen)!r}, 'w').write(json.dumps(\n"
            "    [sys.argv[1:], {k: os.environ.get(k) for k in names}]))\n"
        )
        job_id = run.submit(code, *args, env=env)
        run.finish(job_id)
        assert run.state(job_id) is S.COMPLETED, run.row(job_id)
        got_args, got_env = json.loads(seen.read_text())
        assert got_args == args
        assert got_env == env

    def test_exit_codes_decide_the_end_state(self, run: Run) -> None:
        ok = run.submit("pass")
        bad = run.submit(
            "import os, sys; sys.exit(7 if os.environ['RANK'] == '1' else 0)",
            nodes=2,
            tasks_per_node=1,
        )
        run.finish(ok, bad)
        assert run.state(ok) is S.COMPLETED
        assert run.row(ok)["exit_code"] == 0
        assert run.state(bad) is S.FAILED, run.row(bad)
        assert run.row(bad)["exit_code"] == 7

    def test_a_failed_task_stops_its_siblings_and_its_status_is_the_jobs(self, run: Run) -> None:
        # Rank 0 ends only because rank 1 failed, and the job's status is rank 1's 7, not the
        # signal status rank 0 ends with.
        job_id = run.submit_rank_1_failing()
        run.finish(job_id)  # within the harness's timeout, far below the 300 s
        row = run.row(job_id)
        assert run.state(job_id) is S.FAILED, row
        assert row["exit_code"] == 7, row

    def test_cancel_stops_every_task(self, run: Run) -> None:
        job_id = run.submit(run.report_code("import time; time.sleep(300)\n"), nodes=2)
        run.tick_until(lambda: len(run.reports_found()) == 2, "both tasks to start")
        pids = [r["pid"] for r in run.reports_found().values()]
        run.daemon.cancel(job_id)
        run.finish(job_id)
        assert run.state(job_id) is S.CANCELLED
        deadline = time.monotonic() + 15
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids), "a task outlived its cancelled job"

    def test_walltime_ends_the_job_as_timeout(self, run: Run) -> None:
        job_id = run.submit(run.report_code("import time; time.sleep(300)\n"), time=3)
        run.finish(job_id)
        assert run.state(job_id) is S.TIMEOUT, run.row(job_id)
        pid = next(iter(run.reports_found().values()))["pid"]
        assert not _alive(pid)

    def test_running_job_is_found_again_after_a_daemon_restart(self, run: Run) -> None:
        release = run.root / "release"
        body = (
            "import time\n"
            f"while not os.path.exists({str(release)!r}): time.sleep(0.05)\n"
            "print('released', flush=True)\n"
        )
        job_id = run.submit(run.report_code(body), nodes=2)
        run.tick_until(lambda: len(run.reports_found()) == 2, "both tasks to start")
        assert run.state(job_id) is S.RUNNING
        counts = run.restart()
        assert counts.get("reattached", 0) == 1, counts
        release.touch()
        run.finish(job_id)
        assert run.state(job_id) is S.COMPLETED, run.row(job_id)
        assert run.row(job_id)["attempts"] == 1  # the same attempt, not a restart

    def test_each_task_sees_only_its_gpus(self, harness: ContractHarness, tmp_path: Path) -> None:
        """Issue 15: on a cluster that shares nodes, two tasks per node with one GPU each see
        one GPU each, not the same one (``CUDA_VISIBLE_DEVICES`` and ``ORCH_GPUS``), and where
        our allocator chooses the indices, exactly the ones it chose."""
        if harness.gpu_cluster is None:
            pytest.skip(f"the {harness.name} backend binds no GPUs (whole nodes only)")
        run = Run(dataclasses.replace(harness, cluster=harness.gpu_cluster), tmp_path)
        job_id = run.submit(run.report_code(), nodes=2, tasks_per_node=2, gpus_per_task=1)
        run.finish(job_id)
        assert run.state(job_id) is S.COMPLETED, run.row(job_id)
        reports = run.reports_found()
        assert sorted(reports) == [0, 1, 2, 3]
        seen: dict[str, list[str]] = {}
        for env in reports.values():
            gpus = (env["ORCH_GPUS"] or "").split(",")
            assert len(gpus) == 1 and gpus[0], env
            assert env["CUDA_VISIBLE_DEVICES"] == env["ORCH_GPUS"], env
            seen.setdefault(env["ORCH_NODENAME"], []).append(gpus[0])
        assert len(seen) == 2 and all(len(set(g)) == 2 for g in seen.values()), seen
        if harness.binds_allocated_gpus:
            given = {
                row["node_name"]: sorted((row["gpus"] or "").split(","))
                for row in run.daemon.store.allocation_history(job_id)
            }
            assert {node: sorted(g) for node, g in seen.items()} == given

    def test_concurrent_jobs_never_share_a_node(self, run: Run) -> None:
        n = min(4, run.harness.cluster.size)
        ids = [run.submit("import time; time.sleep(0.5)") for _ in range(n + 1)]

        def sample() -> bool:
            overlap = [
                a
                for a in run.daemon.active.values()
                for b in run.daemon.active.values()
                if a is not b
                and a.block is not None
                and b.block is not None
                and set(a.block.nodes.tolist()) & set(b.block.nodes.tolist())
            ]
            assert not overlap
            return all(run.state(j).is_finished for j in ids) and not run.daemon.draining

        run.tick_until(sample, "all jobs to end")
        assert all(run.state(j) is S.COMPLETED for j in ids)
