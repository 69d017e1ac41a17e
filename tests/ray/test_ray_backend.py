"""The Ray backend on a real four-raylet Ray cluster: placement, node death, busy nodes, abort,
and a daemon process killed and restarted while its job runs (detached actors outlive it).

The contract every backend keeps is in ``tests/contract/test_contract_ray.py``; this file covers
what is Ray's own. Pure parts (the node table, the labeller, options) are tested without Ray.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from launchers.ray import RayBackend
from launchers.ray.actor import LineLabeller
from launchers.ray.cluster import NODE_SHARE, cluster_from_nodes, fetch_nodes, pool_nodes, preset
from orchestrator.backends.contract import LaunchSpec, Liveness
from orchestrator.daemon.client import DaemonClient
from orchestrator.daemon.service import Daemon, DaemonConfig
from orchestrator.daemon.spec import JobSpec
from orchestrator.exceptions import ClusterConfigError, InvalidRequestError
from orchestrator.resources.cluster import Cluster, cluster_from_mapping
from orchestrator.scheduling.job import JobState
from orchestrator.store import Store, sqlite_url
from tests.ray_cluster_session import NAMESPACE, RayTestCluster

REPO = Path(__file__).resolve().parents[2]
S = JobState


def _entry(node_id: str, name: str | None, alive: bool = True, cpus: int = 2) -> dict[str, Any]:
    resources: dict[str, float] = {"CPU": float(cpus), "memory": 2.0 * 2**30}
    if name is not None:
        resources[f"orch_node:{name}"] = 1.0
    return {
        "NodeID": node_id,
        "Alive": alive,
        "NodeManagerAddress": "10.0.0.1",
        "Resources": resources,
    }


# -- pure parts ---------------------------------------------------------------------------------


def test_pool_nodes_names_raylets_by_their_resource_in_natural_order() -> None:
    table = [_entry("a", "r10"), _entry("b", "r2"), _entry("c", None), _entry("d", "r1", cpus=4)]
    nodes = pool_nodes(table)
    assert list(nodes) == ["r1", "r2", "r10"]  # the raylet without a name is not ours
    assert nodes["r2"].node_id == "b" and nodes["r1"].cpus == 4


def test_a_restarted_raylet_replaces_its_dead_entry_and_two_live_ones_are_refused() -> None:
    nodes = pool_nodes([_entry("old", "r1", alive=False), _entry("new", "r1")])
    assert nodes["r1"].node_id == "new" and nodes["r1"].alive
    nodes = pool_nodes([_entry("new", "r1"), _entry("old", "r1", alive=False)])
    assert nodes["r1"].node_id == "new"
    with pytest.raises(ClusterConfigError, match="both offer orch_node:r1"):
        pool_nodes([_entry("a", "r1"), _entry("b", "r1")])


def test_preset_is_a_flat_cluster_of_the_smallest_live_node() -> None:
    nodes = pool_nodes([_entry("a", "r1", cpus=4), _entry("b", "r2", cpus=2)])
    mapping = preset(nodes, "lab")
    cluster = cluster_from_mapping(yaml.safe_load(yaml.safe_dump(mapping)))
    assert cluster.name == "lab" and cluster.topology.kind == "flat"
    assert [cluster.topology.node_name(i) for i in range(cluster.size)] == ["r1", "r2"]
    assert cluster.node.cpus == 2 and cluster.node.memory_mb == 2048
    with pytest.raises(ClusterConfigError, match="orch_node:NAME"):
        preset({})


def test_line_labeller_emits_whole_labelled_lines() -> None:
    lab = LineLabeller(b"3: ")
    assert lab.feed(b"no newline yet") == b""
    assert lab.feed(b" done\nnext\nhalf") == b"3: no newline yet done\n3: next\n"
    assert lab.flush() == b"3: half\n"
    assert lab.flush() == b""


def test_create_refuses_unknown_options_and_bad_numbers(tmp_path: Path) -> None:
    cluster = cluster_from_mapping({"topology": "flat", "node_names": "r1,r2"})
    with pytest.raises(InvalidRequestError, match="partition") as e:
        RayBackend.create(tmp_path, cluster, {"partition": "debug"})
    assert "address" in str(e.value)  # names the valid keys
    with pytest.raises(InvalidRequestError, match="poll_timeout='-1'"):
        RayBackend.create(tmp_path, cluster, {"poll_timeout": "-1"})
    with pytest.raises(InvalidRequestError, match="start_timeout='soon'"):
        RayBackend.create(tmp_path, cluster, {"start_timeout": "soon"})


# -- on the Ray cluster -------------------------------------------------------------------------


def _ray_cluster_of(names: list[str]) -> Cluster:
    return cluster_from_mapping(
        {"name": "ray", "topology": "flat", "node_names": ",".join(names), "node": {"cpus": 2}}
    )


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def test_create_refuses_a_cluster_naming_nodes_no_raylet_has(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    with pytest.raises(InvalidRequestError, match="orch_node:n7"):
        RayBackend.create(tmp_path, _ray_cluster_of(["r1", "n7"]), {"namespace": NAMESPACE})
    with pytest.raises(InvalidRequestError, match="namespace"):
        RayBackend.create(tmp_path, _ray_cluster_of(["r1"]), {"namespace": "elsewhere"})


def test_tasks_run_on_the_raylets_the_allocator_chose(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    backend = RayBackend.create(tmp_path, cluster_from_nodes(fetch_nodes()), {})
    code = "import os; print(os.environ['ORCH_NODENAME'], os.environ['RANK'])"
    spec = LaunchSpec(
        job_id=1,
        attempt=1,
        argv=[sys.executable, "-c", code],
        script=None,
        nodes=["r3", "r1"],
        tasks_per_node=2,
    )
    handle = backend.start(spec)
    ids = {name: node.node_id for name, node in fetch_nodes().items()}
    # One bundle per chosen node, in node-rank order, on the raylet of that name.
    assert handle["node_ids"] == [ids["r3"], ids["r1"]]
    _wait(lambda: backend.poll({1: handle})[1].liveness is Liveness.EXITED, "the job to end")
    assert backend.poll({1: handle})[1].exit_codes == (0, 0, 0, 0)
    out = Path(backend.output_paths(1)[0]).read_text().splitlines()
    # Labelled lines in the job's stdout (as srun --label); each task's own file besides.
    assert sorted(out) == ["0: r3 0", "1: r3 1", "2: r1 2", "3: r1 3"]
    assert (Path(handle["dir"]) / "task-2.out").read_text() == "r1 2\n"
    backend.forget(handle)
    # Both nodes are ours to give at once, though Ray shows them free only a moment later.
    assert backend.unavailable_nodes() == frozenset()
    import ray

    _wait(lambda: ray.available_resources().get("orch_node:r3") == 1.0, "r3 to be released")


def test_scripts_run_by_their_interpreter_and_a_missing_command_is_127(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    backend = RayBackend(tmp_path, _ray_cluster_of(["r2", "r3"]))
    script = '#!/bin/sh\necho "script on $ORCH_NODENAME"\n'
    handles = {
        1: backend.start(LaunchSpec(1, 1, None, script, ["r2"])),
        2: backend.start(LaunchSpec(2, 1, ["/nonexistent/command"], None, ["r3"])),
    }

    def ended() -> bool:
        return all(r.liveness is Liveness.EXITED for r in backend.poll(handles).values())

    _wait(ended, "both jobs to end")
    results = backend.poll(handles)
    assert results[1].exit_codes == (0,) and results[2].exit_codes == (127,)
    assert Path(backend.output_paths(1)[0]).read_text() == "script on r2\n"  # one task: no label
    assert "cannot run '/nonexistent/command'" in Path(backend.output_paths(2)[1]).read_text()
    for handle in handles.values():
        backend.forget(handle)


ALLREDUCE = """
import os
import torch
import torch.distributed as dist

torch.set_num_threads(1)
dist.init_process_group("gloo")  # env:// from MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
t = torch.arange(4, dtype=torch.float32) * (dist.get_rank() + 1)
dist.all_reduce(t)
print(f"node={os.environ['ORCH_NODENAME']} sum={t.tolist()}", flush=True)
dist.destroy_process_group()
"""


def test_a_two_node_job_runs_a_real_torch_allreduce(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    backend = RayBackend(tmp_path, _ray_cluster_of(["r2", "r3"]))
    spec = LaunchSpec(1, 1, [sys.executable, "-c", ALLREDUCE], None, ["r3", "r2"])
    handle = backend.start(spec)
    _wait(lambda: backend.poll({1: handle})[1].liveness is Liveness.EXITED, "the job", 120)
    codes = backend.poll({1: handle})[1].exit_codes
    out, err = (Path(p).read_text() for p in backend.output_paths(1))
    backend.forget(handle)
    assert codes == (0, 0), err
    # Ranks 0 and 1 (on r3, then r2) contribute 1x and 2x [0, 1, 2, 3]: the sum is 3x.
    assert sorted(out.splitlines()) == [
        "0: node=r3 sum=[0.0, 3.0, 6.0, 9.0]",
        "1: node=r2 sum=[0.0, 3.0, 6.0, 9.0]",
    ], err


def test_a_node_held_by_someone_else_is_unavailable(ray_cluster: RayTestCluster) -> None:
    from ray.util.placement_group import placement_group, remove_placement_group

    backend = RayBackend(Path("/nonexistent"), _ray_cluster_of(["r1", "r2", "r3", "r4"]))
    # Ray frees a removed placement group's resources a moment later: an earlier test's group
    # may still hold its node (seen in CI), so start from an all-free cluster.
    _wait(lambda: backend.unavailable_nodes() == frozenset(), "earlier tests' nodes to be free")
    other = placement_group([{"orch_node:r2": 1.0}])  # another user's job on r2
    try:
        import ray

        ray.get(other.ready(), timeout=30)
        assert backend.unavailable_nodes() == {"r2"}
    finally:
        remove_placement_group(other)
    _wait(lambda: backend.unavailable_nodes() == frozenset(), "r2 to be free again")
    # Even a share of the node (another daemon's job on a shared cluster) keeps it out: what
    # that job holds of its CPUs and GPUs, our allocator does not know.
    other = placement_group([{"orch_node:r2": NODE_SHARE}])
    try:
        ray.get(other.ready(), timeout=30)
        _wait(lambda: backend.unavailable_nodes() == {"r2"}, "r2 to be seen shared")
    finally:
        remove_placement_group(other)
    _wait(lambda: backend.unavailable_nodes() == frozenset(), "r2 to be free again")


def test_a_node_running_only_a_job_of_ours_stays_ours_to_give(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    import ray

    backend = RayBackend(tmp_path, _ray_cluster_of(["r1", "r2", "r3", "r4"]))
    _wait(lambda: backend.unavailable_nodes() == frozenset(), "earlier tests' nodes to be free")
    release = tmp_path / "release"
    code = f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.05)\n"
    handle = backend.start(LaunchSpec(1, 1, [sys.executable, "-c", code], None, ["r4"]))
    try:
        _wait(lambda: not ray.available_resources().get("orch_node:r4"), "r4 to be held")
        # Ray shows r4 all held, but by our own job: the daemon knows that node is busy.
        assert backend.unavailable_nodes() == frozenset()
        # A daemon restarted meanwhile (a new backend) knows the job once it has polled it.
        again = RayBackend(tmp_path, _ray_cluster_of(["r1", "r2", "r3", "r4"]))
        assert again.unavailable_nodes() == {"r4"}  # not yet: someone's, for all it knows
        assert again.poll({1: handle})[1].liveness is Liveness.RUNNING
        assert again.unavailable_nodes() == frozenset()
        # A handle from before jobs could share nodes claims the whole node.
        old = {k: v for k, v in handle.items() if k != "claim"}
        third = RayBackend(tmp_path, _ray_cluster_of(["r1", "r2", "r3", "r4"]))
        third.poll({1: old})
        assert third.unavailable_nodes() == frozenset()
    finally:
        release.touch()
    _wait(lambda: backend.poll({1: handle})[1].liveness is Liveness.EXITED, "the job to end")
    backend.forget(handle)
    assert backend.unavailable_nodes() == frozenset()


def test_abort_start_kills_what_a_crashed_start_left(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    import ray
    from ray.util.placement_group import get_placement_group

    backend = RayBackend(tmp_path, _ray_cluster_of(["r2", "r3"]))
    reports = tmp_path / "pids"
    reports.mkdir()
    code = (
        "import os, time\n"
        f"open(os.path.join({str(reports)!r}, os.environ['RANK']), 'w').write(str(os.getpid()))\n"
        "time.sleep(300)\n"
    )
    spec = LaunchSpec(7, 1, [sys.executable, "-c", code], None, ["r2", "r3"])
    handle = backend.start(spec)
    _wait(lambda: len(list(reports.iterdir())) == 2, "both tasks to start")
    pids = [int(p.read_text()) for p in reports.iterdir()]
    # A new daemon knows only the job id and attempt (its start() never returned a handle).
    RayBackend(tmp_path, _ray_cluster_of(["r2", "r3"])).abort_start(7, 1)
    _wait(lambda: not any(_alive(p) for p in pids), "the tasks to die")
    with pytest.raises(ValueError):
        ray.get_actor(handle["actors"][0], namespace=NAMESPACE)
    with pytest.raises(ValueError):
        get_placement_group(handle["pg_name"])
    # A start that comes after the abort never runs the command.
    assert (Path(handle["dir"]) / "abort").exists()


def test_node_death_requeues_the_job_and_it_completes_on_the_others(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    # The head raylet (r1) stays out of the pool: killing it would end the cluster.
    cluster = _ray_cluster_of(["r2", "r3", "r4"])
    backend = RayBackend.create(tmp_path / "backend", cluster, {"namespace": NAMESPACE})
    store = Store(sqlite_url(tmp_path / "orch.db"))
    daemon = Daemon(store, cluster, backend, DaemonConfig(grace_s=1.0))
    reports = tmp_path / "reports"
    reports.mkdir()
    code = (
        "import os, time\n"
        "a, r = os.environ['ORCH_ATTEMPT'], os.environ['RANK']\n"
        f"path = os.path.join({str(reports)!r}, f'{{a}}-{{r}}')\n"
        "open(path, 'w').write(f\"{os.getpid()} {os.environ['ORCH_NODENAME']}\")\n"
        "if a == '1': time.sleep(300)\n"
    )
    spec = JobSpec.from_mapping({"argv": [sys.executable, "-c", code], "nodes": 2})
    job_id = daemon.submit([spec])[0][0]

    def tick_until(done: Callable[[], bool], what: str) -> None:
        def step() -> bool:
            daemon.tick(time.time())
            return done()

        _wait(step, what, timeout=90)

    def state() -> JobState:
        return JobState(store.get_job(job_id)["state"])

    tick_until(lambda: len(list(reports.glob("1-*"))) == 2, "attempt 1 to run on two nodes")
    first = {p.name: p.read_text().split() for p in reports.glob("1-*")}
    victim = first["1-1"][1]
    survivor_pid = int(first["1-0"][0])
    ray_cluster.kill(victim)
    try:
        tick_until(lambda: state() is S.COMPLETED, "the job to complete after the node died")
        events = [e["new_state"] for e in store.events_of(job_id)]
        assert "PREEMPTED" in events and "NODE_FAIL" not in events, events
        row = store.get_job(job_id)
        assert row["attempts"] == 2 and row["exit_code"] == 0
        second = {p.name: p.read_text().split()[1] for p in reports.glob("2-*")}
        assert victim not in second.values()  # the dead node is kept out of scheduling
        assert victim in backend.unavailable_nodes()
        # The task left on the live node was stopped when the attempt was given up.
        _wait(lambda: not _alive(survivor_pid), "the surviving task to be stopped", 15)
        assert not _alive(int(first["1-1"][0]))  # and the one on the dead node died with it
    finally:
        ray_cluster.revive(victim)
        store.close()
    _wait(lambda: victim not in backend.unavailable_nodes(), "the revived node to be usable")


def test_a_killed_daemon_process_finds_its_ray_job_again(
    ray_cluster: RayTestCluster, tmp_path: Path
) -> None:
    root = tmp_path / "state"
    preset_file = tmp_path / "ray.yaml"
    # The documented way: the preset printed from the running Ray cluster.
    printed = subprocess.run(
        [sys.executable, "-m", "launchers.ray.cluster", "--address", ray_cluster.address],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        timeout=120,
    )
    assert yaml.safe_load(printed.stdout)["node_names"] == "r1,r2,r3,r4"
    preset_file.write_text(printed.stdout)
    release = tmp_path / "release"

    def start() -> tuple[subprocess.Popen[bytes], DaemonClient]:
        argv = [sys.executable, "-m", "orchestrator.daemon", "--state-dir", str(root)]
        argv += ["--cluster", str(preset_file), "--backend", "ray"]
        argv += ["--backend-opt", f"address={ray_cluster.address}", "--grace", "1"]
        root.mkdir(exist_ok=True)
        with open(tmp_path / "daemon.log", "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=log, cwd=REPO, env=dict(os.environ))

        def serving() -> bool:
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
            info = root / "daemon.json"
            return info.exists() and json.loads(info.read_text())["pid"] == proc.pid

        _wait(serving, "the daemon to serve")
        return proc, DaemonClient.from_state_dir(root)

    proc, client = start()
    code = f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.05)\n"
    job_id = client.submit({"argv": [sys.executable, "-c", code], "nodes": 2})[0]
    _wait(lambda: client.job(job_id)["state"] == "RUNNING", "the job to run")
    client.close()
    proc.send_signal(signal.SIGKILL)  # the driver dies; the detached actors do not
    proc.wait()
    proc, client = start()
    try:
        assert client.job(job_id)["state"] == "RUNNING"
        release.touch()
        _wait(lambda: client.job(job_id)["state"] == "COMPLETED", "the job to complete")
        assert client.job(job_id)["attempts"] == 1
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
