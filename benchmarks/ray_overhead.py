"""Per-job overhead of the Ray backend next to Ray itself, measured in one run.

Starts its own Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head and one more
raylet, each named ``orch_node:r<i>``; token auth off, no dashboard, its own temporary folder)
and measures, ``--jobs`` times each, one job at a time, in rounds of one of each kind (so every
kind sees the same load on this shared machine):

- ``ray task``: a Ray task that does nothing, submit to result (Ray's own floor);
- ``ray task running true``: a Ray task that runs ``true`` as a subprocess;
- ``ray pg + new actor + true``: Ray alone doing what the backend does for one node: a
  placement group, a new actor in it (a new worker process) running ``true``, both removed;
- ``daemon, 1 node`` and ``daemon, 2 nodes``: ``true`` submitted to an in-process daemon with the
  Ray backend, ticked every 5 ms, submit to COMPLETED (placement group, one detached actor per
  task, the subprocess, the poll that sees it end; the teardown of actors and placement group
  happens in that same tick and is included).

    .venv/bin/python benchmarks/ray_overhead.py [--jobs 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray
from ray.cluster_utils import Cluster
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from launchers.ray import RayBackend
from launchers.ray.cluster import cluster_from_nodes, fetch_nodes
from orchestrator.daemon.service import Daemon, DaemonConfig
from orchestrator.daemon.spec import JobSpec
from orchestrator.scheduling.job import JobState
from orchestrator.store import Store, sqlite_url


def _node(name: str) -> dict[str, object]:
    return {
        "num_cpus": 2,
        "resources": {f"orch_node:{name}": 1},
        "object_store_memory": 80 * 2**20,
    }


@ray.remote(num_cpus=0)
def _nothing() -> int:
    return 0


@ray.remote(num_cpus=0)
def _run_true() -> int:
    return subprocess.run(["true"], check=False).returncode


@ray.remote(num_cpus=0)
class _Runner:
    def run_true(self) -> int:
        return subprocess.run(["true"], check=False).returncode


def _pg_actor_true() -> None:
    """Ray alone doing what the backend does for a one-node job: a placement group on node r2,
    a new actor in it running ``true``, then both removed."""
    pg = placement_group([{"orch_node:r2": 1.0}], strategy="STRICT_SPREAD")
    ray.get(pg.ready())
    actor = _Runner.options(  # type: ignore[attr-defined]
        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
    ).remote()
    assert ray.get(actor.run_true.remote()) == 0
    ray.kill(actor)
    remove_placement_group(pg)


def _interleaved(jobs: int, kinds: dict[str, Callable[[], None]]) -> dict[str, list[float]]:
    """Time each kind ``jobs`` times, in rounds of one of each, so that all kinds see the same
    load (the machine is shared); one warm-up round first (workers started, code shipped)."""
    for one in kinds.values():
        one()
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(jobs):
        for name, one in kinds.items():
            t = time.perf_counter()
            one()
            times[name].append(time.perf_counter() - t)
    return times


def _daemon_job(daemon: Daemon, nodes: int) -> Callable[[], None]:
    spec = JobSpec.from_mapping({"argv": ["true"], "nodes": nodes})

    def one() -> None:
        job_id = daemon.submit([spec])[0][0]
        while True:
            daemon.tick(time.time())
            state = JobState(daemon.store.get_job(job_id)["state"])
            if state.is_finished and not daemon.draining:
                break
            time.sleep(0.005)
        assert state is JobState.COMPLETED, daemon.store.events_of(job_id)

    return one


def _show(name: str, times: list[float]) -> None:
    ms = sorted(t * 1000 for t in times)
    p90 = ms[int(0.9 * (len(ms) - 1))]
    print(f"{name:28s} median {statistics.median(ms):8.1f} ms   p90 {p90:8.1f} ms   n={len(ms)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="orch-raybench-", dir="/tmp")
    os.environ["RAY_TMPDIR"] = tmp
    head = _node("r1")
    head["include_dashboard"] = False
    cluster = Cluster(initialize_head=True, head_node_args=head)
    try:
        cluster.add_node(**_node("r2"))
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="orch", log_to_driver=False)
        pool = cluster_from_nodes(fetch_nodes())
        state = Path(tmp) / "state"
        state.mkdir()
        backend = RayBackend.create(state / "backend", pool, {})
        store = Store(sqlite_url(state / "orch.db"))
        daemon = Daemon(store, pool, backend, DaemonConfig(grace_s=1.0))
        print(f"Ray {ray.__version__}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
        kinds = {
            "ray task": lambda: ray.get(_nothing.remote()),
            "ray task running true": lambda: ray.get(_run_true.remote()),
            "ray pg + new actor + true": _pg_actor_true,
            "daemon, 1 node": _daemon_job(daemon, 1),
            "daemon, 2 nodes": _daemon_job(daemon, 2),
        }
        for name, times in _interleaved(args.jobs, kinds).items():
            _show(name, times)
        store.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
