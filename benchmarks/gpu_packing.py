"""Packing one-GPU trials onto shared GPU nodes against whole nodes (issue 15).

Real runs (``--part local``, ``--part slurm``): 64 one-GPU jobs that each ``sleep 10`` (idle, so
two CPUs do not limit them) on 2 nodes x 4 GPUs, once packed (each job asks one GPU) and once
with ``--exclusive`` (whole nodes), through a real daemon on the local backend (preset
``local-gpu``) or on the local Slurm (2 of its nodes, each declared with 4 GPUs: the test Slurm's
``SLURM_GPUS_PER_NODE=4``). Prints the wall time of each, their ratio (ideal 4x) and the GPUs in
use over time (sampled every second from the daemon's node view).

Simulation (``--part sim``): a synthetic GPU-cluster workload on 64 nodes x 8 GPUs, with and
without packing: mean wait and mean bounded slowdown (10 s bound). The workload (documented
here, seeded): 4,000 jobs, Poisson arrivals at an offered load of 0.85 of the GPUs; GPUs per job
1 (55 %), 2 (15 %), 4 (12 %), 8 (12 %), 16 (4 %), 32 (2 %), jobs of more than 8 GPUs on
whole nodes of 8; 8 cores and 64 GB per GPU; run times log-normal (median 20 min, sigma 1.5,
at most 24 h), estimates the run time rounded up to the hour. Whole nodes: every job is
``--exclusive``, so a 1-GPU job holds 8 GPUs.

    .venv/bin/python benchmarks/gpu_packing.py --part sim
    .venv/bin/python benchmarks/gpu_packing.py --part local
    .venv/bin/python benchmarks/gpu_packing.py --part slurm
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from daemon_common import BenchDaemon

from orchestrator.resources.cluster import cluster_from_mapping
from orchestrator.resources.request import JobRequest
from orchestrator.simulate.engine import simulate
from orchestrator.simulate.workload import WorkloadJob

SLURM = Path(__file__).resolve().parents[2] / "shared" / "slurm"
SLURM2_GPU = """name: slurm2-gpu
description: 2 nodes of the local Slurm, 4 GPUs each, shared
topology: flat
shared: true
node_names: "n[1-2]"
node: {cpus: 4, gpus: 4, memory_mb: 4000}
"""


def run_jobs(root: Path, cluster: str, backend: str, exclusive: bool, jobs: int, sleep: float):
    """Submit ``jobs`` one-GPU sleepers, wait for all; (wall seconds, GPU-use samples)."""
    daemon = BenchDaemon(root, "--cluster", cluster, "--backend", backend)
    samples: list[tuple[float, int, int]] = []
    try:
        client = daemon.client()
        job = {"argv": ["sleep", str(sleep)], "nodes": 1, "cpus_per_task": 1}
        job |= {"exclusive": True} if exclusive else {"gpus_per_task": 1, "mem": "500M"}
        started = time.monotonic()
        client.submit_batch([dict(job, name=f"t{i}") for i in range(jobs)])
        stop = threading.Event()

        def sample() -> None:
            watcher = daemon.client()
            while not stop.is_set():
                usage = watcher.nodes().get("usage") or []
                held = sum(u["gpus"][0] for u in usage)
                working = len(watcher.jobs(state="RUNNING"))  # each job uses one GPU
                samples.append((round(time.monotonic() - started, 1), held, working))
                stop.wait(1.0)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        while True:
            left = client.jobs(state="PENDING,STARTING,RUNNING")
            if not left:
                break
            time.sleep(0.5)
        wall = time.monotonic() - started
        stop.set()
        thread.join()
        states = {j["state"] for j in client.jobs(state="COMPLETED,FAILED,CANCELLED,TIMEOUT")}
        assert states == {"COMPLETED"}, states
        return wall, samples
    finally:
        daemon.stop()


def occupancy_line(samples: list[tuple[float, int, int]], gpus: int) -> str:
    """GPUs held and GPUs working (one per running job) every 10 s: ``t=10s:8/2`` is 8 held,
    2 working, of ``gpus``."""
    shown = [f"t={t:.0f}s:{h}/{w}" for t, h, w in samples if round(t) % 10 == 0]
    return f"of {gpus} GPUs, held/working: " + " ".join(dict.fromkeys(shown))


def real(part: str, jobs: int, sleep: float) -> dict[str, object]:
    started_slurm = False
    with tempfile.TemporaryDirectory(prefix="gpu-pack-") as tmp:
        if part == "local":
            cluster, backend = "local-gpu", "local"
        else:
            up = subprocess.run(["sinfo", "-h"], capture_output=True, check=False).returncode == 0
            if not up:
                env = {"SLURM_GPUS_PER_NODE": "4", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
                subprocess.run(["bash", str(SLURM / "start-slurm.sh")], env=env, check=True)
                started_slurm = True
            cluster = str(Path(tmp) / "slurm2-gpu.yaml")
            Path(cluster).write_text(SLURM2_GPU)
            backend = "slurm"
        try:
            out: dict[str, object] = {"backend": backend, "jobs": jobs, "sleep_s": sleep}
            for label, exclusive in (("packed", False), ("whole_nodes", True)):
                wall, samples = run_jobs(
                    Path(tmp) / label, cluster, backend, exclusive, jobs, sleep
                )
                out[f"{label}_wall_s"] = round(wall, 1)
                out[f"{label}_gpus_in_use"] = occupancy_line(samples, 8)
                print(f"{label}: {wall:.1f} s", file=sys.stderr, flush=True)
            out["ratio"] = round(out["whole_nodes_wall_s"] / out["packed_wall_s"], 2)  # type: ignore[operator]
            return out
        finally:
            if started_slurm:
                subprocess.run(["bash", str(SLURM / "stop-slurm.sh")], check=False)


GPU_MIX = ((1, 0.55), (2, 0.15), (4, 0.12), (8, 0.12), (16, 0.04), (32, 0.02))


def gpu_workload(n: int, nodes: int, load: float, seed: int) -> tuple[list, list]:
    """The documented synthetic workload, packed and whole-node versions of the same jobs."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice([g for g, _ in GPU_MIX], size=n, p=[p for _, p in GPU_MIX])
    runs = np.minimum(np.exp(rng.normal(math.log(1200), 1.5, size=n)), 86400.0)
    mean_gpu_seconds = float(np.mean(sizes * runs))
    rate = load * nodes * 8 / mean_gpu_seconds  # jobs per second for the offered load
    submits = np.cumsum(rng.exponential(1 / rate, size=n))
    packed, whole = [], []
    for i in range(n):
        gpus, run = int(sizes[i]), float(runs[i])
        estimate = math.ceil(run / 3600) * 3600.0
        common = {"walltime_s": estimate, "submit_time": float(submits[i])}
        if gpus > 8:
            shared = JobRequest(nodes=gpus // 8, exclusive=True, **common)
            exclusive = shared
        else:
            shared = JobRequest(
                nodes=1,
                cpus_per_task=8 * gpus,
                gpus_per_node=gpus,
                mem_per_node_mb=64 * 1024 * gpus,
                **common,
            )
            exclusive = JobRequest(nodes=1, exclusive=True, **common)
        packed.append(WorkloadJob(i, shared, run))
        whole.append(WorkloadJob(i, exclusive, run))
    return packed, whole


def sim(jobs: int, nodes: int, load: float, seed: int) -> dict[str, object]:
    cluster = cluster_from_mapping(
        {
            "name": f"gpu{nodes}",
            "topology": "flat",
            "shared": True,
            "nodes": nodes,
            "node": {"cpus": 64, "gpus": 8, "memory_mb": 512 * 1024},
        }
    )
    packed, whole = gpu_workload(jobs, nodes, load, seed)
    gpus_of = {job.job_id: job.request.gpus_on_node * job.request.node_count for job in packed}
    for job in packed:
        if job.request.exclusive:
            gpus_of[job.job_id] = 8 * job.request.node_count
    out: dict[str, object] = {"jobs": jobs, "nodes": nodes, "gpus": nodes * 8, "load": load}
    for label, workload in (("packed", packed), ("whole_nodes", whole)):
        started = time.perf_counter()
        frame = simulate(cluster, workload, backfill="easy").jobs
        makespan = float(frame["end"].max() - frame["submit"].min())
        work = float((frame["job_id"].map(gpus_of) * frame["run"]).sum())
        out[f"{label}_mean_wait_h"] = round(float(frame["wait"].mean()) / 3600, 2)
        out[f"{label}_mean_bsld"] = round(float(frame["bsld"].mean()), 2)
        out[f"{label}_makespan_h"] = round(makespan / 3600, 1)
        # GPUs doing the jobs' work (not merely held) over the makespan.
        out[f"{label}_gpus_busy"] = round(work / (nodes * 8 * makespan), 3)
        out[f"{label}_sim_s"] = round(time.perf_counter() - started, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["sim", "local", "slurm"], required=True)
    parser.add_argument("--jobs", type=int, default=None)
    parser.add_argument("--sleep", type=float, default=10.0)
    parser.add_argument("--load", type=float, default=0.85)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.part == "sim":
        out = sim(args.jobs or 4000, 64, args.load, args.seed)
    else:
        out = real(args.part, args.jobs or 64, args.sleep)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
