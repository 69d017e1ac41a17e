"""The Slurm backend: runs allocated jobs through a real Slurm, direct or inside a pilot.

Direct mode (default): one Slurm batch job per attempt of ours, pinned to the nodes our allocator
chose (``--nodelist``, ``-N``; whole nodes, ``--exclusive``, unless the job shares its nodes),
whose script ``srun``s the tasks through a small supervisor (:mod:`.supervisor`) that exports the
rank variables every backend gives and records each task's exit status. Pilot mode
(``mode=pilot``): the backend holds one allocation of K whole nodes (:mod:`launchers.slurm.pilot`)
and starts each job as a step in it (``srun --jobid=<pilot> --nodelist=... --exact``); the daemon
may only place jobs on the allocation's nodes.

GPUs and memory: Slurm chooses a job's GPUs itself (our allocator's indices, ``node_gpus``, are
not passed on): ``--gpus-per-task`` (else ``--gpus-per-node``) on the batch job and again on its
step, with ``--gpu-bind=per_task:N``, so each task's ``CUDA_VISIBLE_DEVICES`` holds its own
GPUs; the supervisor exports them as ``ORCH_GPUS``. ``--mem`` per node when the job asks for
memory. The job's ``partition`` wins over the backend's option (direct mode; a step runs in
its allocation's).

Polling is one ``squeue`` for every job of ours per tick (``sacct`` only for jobs the controller
has forgotten); what it and the wrappers report is judged by the pure :func:`decide`. Everything
needed to find a job again is in its handle, so a restarted daemon re-attaches.

The job's folder is shared by the daemon and the tasks (``JobPaths``): on this machine every node
is local; on a real cluster the daemon's state folder must be on a shared file system, as
submitit's is.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from launchers.slurm.commands import (
    cancel,
    failed_nodes,
    job_states,
    node_jobs,
    node_states,
    run_slurm,
    sbatch,
)
from launchers.slurm.pilot import PilotAllocation, step_allocation_ended
from launchers.slurm.poll import decide
from launchers.slurm.text import (
    Phase,
    SbatchScript,
    SlurmJobRecord,
    SlurmParseError,
    gpu_options,
    render_sbatch_script,
)
from orchestrator.backends.contract import (
    Handle,
    LaunchSpec,
    Liveness,
    PollResult,
    usage_of,
)
from orchestrator.backends.jobfolder import JobFolderBackend, PreparedJob, free_port
from orchestrator.backends.options import option, parse_options
from orchestrator.exceptions import BackendError, InvalidRequestError
from orchestrator.nodeside.files import atomic_write, process_start_ticks
from orchestrator.nodeside.record import TaskEnd
from orchestrator.resources.hostlist import compress_hostlist
from orchestrator.scheduling.job import JobState

if TYPE_CHECKING:
    from orchestrator.resources.cluster import Cluster

__all__ = ["SlurmBackend"]

SUPERVISOR = Path(__file__).resolve().parent / "supervisor.py"


@dataclass(frozen=True)
class SlurmOptions:
    """``--backend slurm`` options (``--backend-opt KEY=VALUE``; see :class:`SlurmBackend`)."""

    mode: str = option("direct", "direct or pilot", "pilot", choices=("direct", "pilot"))
    partition: str | None = option(None, "the Slurm partition (none: the default)", "debug")
    pilot_nodes: int | None = option(
        None, "the pilot allocation's nodes (none: the cluster's)", "16", minimum=1
    )
    pilot_time: float = option(3600.0, "the pilot allocation's time", "1:00:00", seconds=True)
    pilot_idle: float = option(30.0, "seconds a pilot allocation stays idle", "30", seconds=True)
    pilot_margin: float = option(
        60.0, "an allocation with less time left takes no new job", "60", seconds=True
    )
    requeue_code: int | None = option(
        3, "the exit status of a job that checkpointed on Slurm's signal (none: none)", "3"
    )
    time_slack: float = option(
        60.0, "seconds Slurm's time limit exceeds the job's walltime", "60", seconds=True
    )
    quarantine: float = option(
        300.0, "seconds a node that failed under a job is not given", "300", seconds=True
    )
    pending_limit: float = option(
        60.0, "seconds Slurm may keep a direct job pending before it is requeued", "60",
        seconds=True,
    )  # fmt: skip


_KILL_EVERY_S = 2.0
"""A repeated SIGKILL (the daemon repeats it every tick) reaches scancel this often at most."""


class SlurmBackend(JobFolderBackend):
    """Runs jobs as Slurm jobs (direct) or as steps of one held allocation (pilot).

    Args:
        root: The backend's state folder (job folders, the pilot's id).
        pool: The node names of the daemon's cluster (Slurm's names).
        mode: ``direct`` or ``pilot``.
        partition: The Slurm partition (None: the default one); a job that names its own
            runs there instead (direct mode).
        pilot_nodes, pilot_time_s, pilot_idle_s: The pilot allocation's K, T and idle timeout.
        pilot_margin_s: An allocation with less time left takes no new job
            (:class:`~launchers.slurm.pilot.PilotAllocation`).
        requeue_code: A task that was sent a signal by the engine and exits with this status
            checkpointed and wants to run again (None: no such status).
        time_slack_s: Slurm's own time limit is the job's walltime plus this (the daemon
            enforces the walltime; Slurm's limit is the safety net while the daemon is down).
        quarantine_s: A node that failed under a job of ours is not given again for this long,
            even if Slurm returns it to service at once (``ReturnToService=2`` does, the moment
            its slurmd answers): a flapping node would fail the requeued job again.
        pending_limit_s: A direct job Slurm still holds PENDING after this long (a node we
            chose was taken between our sinfo and our sbatch) is cancelled and requeued, so
            the allocator chooses again instead of the job waiting on a busy node.
        python: The interpreter that runs the task wrapper on the nodes.
    """

    name = "slurm"

    def __init__(
        self,
        root: Path,
        pool: Sequence[str],
        *,
        mode: str = "direct",
        partition: str | None = None,
        pilot_nodes: int | None = None,
        pilot_time_s: float = 3600.0,
        pilot_idle_s: float = 30.0,
        pilot_margin_s: float = 60.0,
        requeue_code: int | None = 3,
        time_slack_s: float = 60.0,
        quarantine_s: float = 300.0,
        pending_limit_s: float = 60.0,
        python: str = sys.executable,
    ) -> None:
        if mode not in ("direct", "pilot"):
            raise InvalidRequestError("mode", mode, "expected direct or pilot", "mode=pilot")
        self.root = Path(root)
        if "%" in str(self.root):
            # Slurm expands %j, %t, ... in --output paths.
            raise InvalidRequestError("root", str(root), "must not contain '%'", "/srv/orch")
        self.root.mkdir(parents=True, exist_ok=True)
        self.pool = tuple(pool)
        self.mode = mode
        self.partition = partition
        self.requeue_code = requeue_code
        self.time_slack_s = time_slack_s
        self.quarantine_s = quarantine_s
        self.pending_limit_s = pending_limit_s
        self.python = python
        # Names this backend's Slurm jobs: two daemons sharing one Slurm never touch each
        # other's jobs.
        self.tag = "orch-" + hashlib.sha1(str(self.root.resolve()).encode()).hexdigest()[:10]
        self._last_kill: dict[tuple[int, int], float] = {}
        self._quarantine: dict[str, float] = {}
        """Node -> until when (epoch seconds) it is not given, after it failed under a job."""
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._pilot_jobs: set[tuple[int, int]] = set()
        self._faults: dict[str, str] = {}
        """Command -> why it failed last time (cleared when it answers again)."""
        self.pilot: PilotAllocation | None = None
        if mode == "pilot":
            self.pilot = PilotAllocation(
                self.root,
                self.tag,
                nodes=pilot_nodes or len(self.pool),
                time_s=pilot_time_s,
                idle_s=pilot_idle_s,
                partition=partition,
                margin_s=pilot_margin_s,
            )
            # Adopt the allocation a previous daemon held (its id is in the state folder).
            with contextlib.suppress(BackendError):
                self.pilot.update()

    @classmethod
    def create(cls, root: Path, cluster: Cluster, options: Mapping[str, str]) -> SlurmBackend:
        """``--backend slurm`` with the options of :class:`SlurmOptions`."""
        opts = parse_options(SlurmOptions, options, cls.name)
        if opts.pilot_nodes is not None and opts.pilot_nodes > cluster.size:
            raise InvalidRequestError(
                "pilot_nodes", opts.pilot_nodes, f"the cluster has {cluster.size} nodes", "4"
            )
        return cls(
            root,
            cluster.topology.node_names,
            mode=opts.mode,
            partition=opts.partition or None,
            pilot_nodes=opts.pilot_nodes,
            pilot_time_s=opts.pilot_time,
            pilot_idle_s=opts.pilot_idle,
            pilot_margin_s=opts.pilot_margin,
            requeue_code=opts.requeue_code,
            time_slack_s=opts.time_slack,
            quarantine_s=opts.quarantine,
            pending_limit_s=opts.pending_limit,
        )

    # -- is Slurm there ----------------------------------------------------------------------

    def check(self) -> None:
        try:
            node_states()
        except BackendError as e:
            raise BackendError(
                f"cannot reach Slurm ({e}); is slurmctld running, and SLURM_CONF right?"
            ) from e

    @property
    def engine_fault(self) -> str | None:
        return "; ".join(f"{what}: {why}" for what, why in self._faults.items()) or None

    def _answered(self, what: str, error: Exception | None = None) -> None:
        if error is None:
            self._faults.pop(what, None)
        else:
            self._faults[what] = str(error)

    # -- paths and environment ------------------------------------------------------------------

    def _environment(self, spec: LaunchSpec) -> dict[str, str]:
        """The job's variables; the wrapper adds the per-task ones (RANK, LOCAL_RANK, ...)."""
        env = self.job_environment(spec)
        # The first node of ours hosts rank 0 (torch.distributed's env:// meets there).
        env.update({"MASTER_ADDR": spec.nodes[0], "MASTER_PORT": str(free_port())})
        return env

    def _time_limit(self, spec: LaunchSpec) -> float | None:
        return None if spec.walltime_s is None else spec.walltime_s + self.time_slack_s

    # -- start ----------------------------------------------------------------------------------

    def _launch(self, job: PreparedJob) -> Handle:
        spec = job.spec
        task = [self.python, "-I", "-S", str(SUPERVISOR), str(job.attempt_dir), "--", *job.argv]
        handle: Handle = {
            "mode": self.mode,
            "job_id": spec.job_id,
            "attempt": spec.attempt,
            "dir": str(job.attempt_dir),
            "ranks": job.ntasks,
            "submitted": time.time(),
        }
        if self.pilot is not None:
            handle.update(self._start_step(job, task))
            self._pilot_jobs.add((spec.job_id, spec.attempt))
        else:
            handle["slurm_id"] = self._submit(job, task)
        return handle

    def sbatch_script(self, job: PreparedJob, task: list[str]) -> SbatchScript:
        """The direct batch job of one attempt: our nodes (``--nodelist``), tasks, CPUs, GPUs
        and memory, and whole nodes (``--exclusive``) only when the job has them."""
        spec, paths = job.spec, job.paths
        extra = {"--open-mode": "append", "--chdir": job.cwd, "--comment": self._comment(spec)}
        partition = spec.partition or self.partition
        if partition:
            extra["--partition"] = partition
        # No requeue by Slurm: it would wait for the very nodes that failed; the daemon
        # requeues elsewhere instead. Whole nodes (every preset of whole-node clusters, and
        # jobs that ask for them on shared ones): our allocator gives the node to no one else,
        # so Slurm must not either. A job that shares its nodes gets what it asked for only.
        flags = ("--exclusive", "--no-requeue") if spec.exclusive else ("--no-requeue",)
        return SbatchScript(
            name=spec.name or f"orch-{spec.job_id}",
            argv=task,
            nodelist=spec.nodes,
            tasks_per_node=spec.tasks_per_node,
            cpus_per_task=spec.cpus_per_task,
            gpus_per_task=spec.gpus_per_task,
            gpus_per_node=spec.gpus_per_node,
            mem_mb=spec.mem_per_node_mb,
            time_s=self._time_limit(spec),
            stdout=str(paths.stdout),
            stderr=str(paths.stderr),
            env=self._environment(spec),
            extra=extra,
            flags=flags,
            # The daemon stops the other tasks when one fails (SIGTERM, grace, SIGKILL), as
            # with every backend; --label tells the ranks' lines apart in the shared files.
            srun_options=(
                "--kill-on-bad-exit=0",
                "--label",
                f"--cpus-per-task={spec.cpus_per_task}",
            ),
        )

    def _submit(self, job: PreparedJob, task: list[str]) -> str:
        spec = job.spec
        try:
            text = render_sbatch_script(self.sbatch_script(job, task))
        except InvalidRequestError as e:
            raise BackendError(f"job {spec.job_id}: {e}") from e
        atomic_write(job.attempt_dir / "sbatch.sh", text)
        slurm_id = sbatch(text)
        atomic_write(job.attempt_dir / "slurm_id", slurm_id + "\n")
        return slurm_id

    def _comment(self, spec: LaunchSpec) -> str:
        return f"{self.tag}:{spec.job_id}:{spec.attempt}"

    def _start_step(self, job: PreparedJob, task: list[str]) -> dict[str, object]:
        assert self.pilot is not None
        spec, paths, cwd = job.spec, job.paths, job.cwd
        pilot_id = self.pilot.slurm_id
        if pilot_id is None or not self.pilot.running:
            # The allocation ended between the scheduling pass and now: the job never ran,
            # and its first poll says so (no launcher, allocation gone: REQUEUE).
            return {"pilot": "", "srun": [0, 0]}
        outside = set(spec.nodes) - set(self.pilot.nodes)
        if outside:
            raise BackendError(
                f"job {spec.job_id}: nodes {sorted(outside)} are outside the pilot allocation"
            )
        argv = self.step_argv(spec, pilot_id, cwd)
        env = dict(os.environ)
        # A daemon started inside a Slurm job must not pass that job's identity to the step.
        for key in [k for k in env if k.startswith("SLURM_")]:
            del env[key]
        env.update(self._environment(spec))
        try:
            with open(paths.stdout, "ab") as out, open(paths.stderr, "ab") as err:
                proc = subprocess.Popen(
                    [*argv, *task],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
        except OSError as e:
            raise BackendError(f"job {spec.job_id}: cannot run srun: {e}") from e
        self._children[proc.pid] = proc
        ticks = process_start_ticks(proc.pid) or 0
        return {"pilot": pilot_id, "srun": [proc.pid, ticks]}

    def step_argv(self, spec: LaunchSpec, pilot_id: str, cwd: str) -> list[str]:
        """The ``srun`` of one job as a step of the pilot allocation (the task command follows).

        ``--exact``: the step gets only the CPUs, GPUs and memory it asks for, so jobs that
        share a node of the allocation run side by side. The partition is the allocation's
        (a step cannot choose another); the job's nodes are in it.
        """
        argv = [
            "srun",
            f"--jobid={pilot_id}",
            f"--job-name={self._comment(spec)}",
            f"--nodes={len(spec.nodes)}",
            f"--nodelist={compress_hostlist(spec.nodes)}",
            f"--ntasks={len(spec.nodes) * spec.tasks_per_node}",
            f"--ntasks-per-node={spec.tasks_per_node}",
            f"--cpus-per-task={spec.cpus_per_task}",
            *gpu_options(spec.gpus_per_task, spec.gpus_per_node, step=True),
        ]
        if spec.mem_per_node_mb > 0:
            argv.append(f"--mem={spec.mem_per_node_mb}M")
        argv += ["--exact", "--kill-on-bad-exit=0", "--label", f"--chdir={cwd}"]
        limit = self._time_limit(spec)
        if limit is not None:
            argv.append(f"--time={max(1, int(-(-limit // 60)))}")
        return argv

    # -- poll -----------------------------------------------------------------------------------

    def _tasks(self, handle: Handle) -> list[TaskEnd | None]:
        return self.task_ends(handle["dir"], int(handle["ranks"]))

    def poll(self, handles: Mapping[int, Handle]) -> dict[int, PollResult]:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]
        ids = {str(h["slurm_id"]) for h in handles.values() if h.get("slurm_id")}
        ids |= {str(h["pilot"]) for h in handles.values() if h.get("pilot")}
        if self.pilot is not None and self.pilot.slurm_id is not None:
            ids.add(self.pilot.slurm_id)
        try:
            records = job_states(ids)
        except (BackendError, SlurmParseError) as e:
            self._answered("squeue", e)
            return {}  # no news this tick; the jobs are looked at again at the next
        self._answered("squeue")
        if self.pilot is not None:
            self.pilot.update(records)
        out: dict[int, PollResult] = {}
        for job_id, handle in handles.items():
            if handle.get("mode") == "pilot":
                self._pilot_jobs.add((job_id, int(handle["attempt"])))
                out[job_id] = self._poll_step(handle, records)
                continue
            record = records.get(str(handle["slurm_id"]))
            if record is not None and self._pending_too_long(record, handle):
                out[job_id] = PollResult(Liveness.REQUEUE, (None,) * int(handle["ranks"]))
                continue
            phase = record.phase if record is not None else None
            exit_code = (record.exit_code, record.signal) if record is not None else None
            tasks = self._tasks(handle)
            result = decide(
                phase,
                tasks,
                slurm_exit=exit_code,
                slurm_completed=record is not None and record.state is JobState.COMPLETED,
                requeue_code=self.requeue_code,
            )
            out[job_id] = replace(result, usage=usage_of(tasks))
            if record is not None and record.state is JobState.NODE_FAIL:
                self._quarantine_failed(record.nodes, float(handle.get("submitted", 0.0)))
        return out

    def _pending_too_long(self, record: SlurmJobRecord, handle: Handle) -> bool:
        """Cancel a job Slurm has kept pending past ``pending_limit_s`` (True: cancelled)."""
        waited = time.time() - float(handle.get("submitted", time.time()))
        if record.state is not JobState.PENDING or waited < self.pending_limit_s:
            return False
        try:
            cancel(record.job_id)
        except BackendError:
            return False  # tried again at the next poll
        # Slurm may have started it meanwhile: then the cancel ends it, and it reruns anyway.
        return True

    def _quarantine_failed(self, nodes: Sequence[str], since: float) -> None:
        """Keep the node that failed under a job out of scheduling for ``quarantine_s``; all
        of the job's nodes when the accounting cannot say which one it was."""
        try:
            bad = failed_nodes(nodes, since) or set(nodes)
        except BackendError:
            bad = set(nodes)
        until = time.time() + self.quarantine_s
        for node in bad:
            self._quarantine[node] = until

    def _poll_step(self, handle: Handle, records: Mapping[str, SlurmJobRecord]) -> PollResult:
        pid, ticks = handle["srun"]
        tasks = self._tasks(handle)
        if pid and process_start_ticks(int(pid)) == int(ticks):
            return replace(decide(Phase.RUNNING, tasks), usage=usage_of(tasks))
        ended = step_allocation_ended(records.get(str(handle["pilot"])))
        result = decide(
            Phase.ENDED,
            tasks,
            requeue_code=self.requeue_code,
            allocation_ended=ended,
        )
        return replace(result, usage=usage_of(tasks))

    # -- signals --------------------------------------------------------------------------------

    def signal(self, handle: Handle, signum: int) -> None:
        key = (int(handle["job_id"]), int(handle["attempt"]))
        if signum == signal.SIGKILL:
            now = time.monotonic()
            if now - self._last_kill.get(key, -_KILL_EVERY_S) < _KILL_EVERY_S:
                return
            self._last_kill[key] = now
        if handle.get("mode") == "pilot":
            self._signal_step(handle, signum)
            return
        slurm_id = str(handle["slurm_id"])
        if signum == signal.SIGKILL:
            cancel(slurm_id)
            return
        # To the tasks of every step (not the batch shell, whose srun then returns their
        # statuses); a job Slurm has not started yet is simply cancelled.
        name = signal.Signals(signum).name.removeprefix("SIG")
        said = run_slurm(["scancel", f"--signal={name}", slurm_id], check=False)
        del said
        records = job_states([slurm_id])
        record = records.get(slurm_id)
        if record is not None and record.state is JobState.PENDING:
            cancel(slurm_id)

    def _signal_step(self, handle: Handle, signum: int) -> None:
        pid, ticks = handle["srun"]
        if not pid:
            return  # never launched
        if signum != signal.SIGKILL and process_start_ticks(int(pid)) == int(ticks):
            # srun forwards the signal to every task of its step.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(pid), signum)
            return
        name = f"{self.tag}:{handle['job_id']}:{handle['attempt']}"
        for step in self._steps(str(handle["pilot"]), name):
            cancel(step)

    def _steps(self, pilot_id: str, name: str) -> list[str]:
        """Step ids (``P.s``) of the pilot's steps called ``name``."""
        text = run_slurm(["squeue", "-h", "-s", "-j", pilot_id, "-o", "%i|%j"], check=False)
        steps = []
        for line in text.splitlines():
            step, _, found = line.strip().partition("|")
            if found == name:
                steps.append(step)
        return steps

    def _abort_launch(self, job_id: int, attempt: int, attempt_dir: Path) -> None:
        comment = f"{self.tag}:{job_id}:{attempt}"
        if self.pilot is not None:
            if self.pilot.slurm_id is not None:
                for step in self._steps(self.pilot.slurm_id, comment):
                    cancel(step)
            return
        text = run_slurm(["squeue", "-h", "-o", "%i|%k"], check=False)
        for line in text.splitlines():
            slurm_id, _, found = line.strip().partition("|")
            if found == comment:
                cancel(slurm_id)

    def forget(self, handle: Handle) -> None:
        key = (int(handle["job_id"]), int(handle["attempt"]))
        self._last_kill.pop(key, None)
        self._pilot_jobs.discard(key)

    # -- nodes, demand, close -------------------------------------------------------------------

    def unavailable_nodes(self) -> frozenset[str]:
        now = time.time()
        for node, until in list(self._quarantine.items()):
            if until <= now:
                del self._quarantine[node]
        if self.pilot is not None:
            return self._pilot_unavailable() | frozenset(self._quarantine)
        try:
            states = node_states()
        except BackendError as e:
            self._answered("sinfo", e)
            return frozenset(self.pool)  # Slurm unreachable: start nothing
        self._answered("sinfo")
        # Only an idle node is ours to give: allocated or mixed ones run others' jobs (or ours,
        # which the daemon holds anyway), and down, drained, not responding (*) or
        # completing nodes cannot take a job now. Except a node that only jobs of ours share
        # (mixed): what of it is free, the daemon's allocator knows.
        busy = {n for n in self.pool if states.get(n) != "idle"}
        busy -= self._shared_by_ours_only({n for n in busy if states.get(n) == "mix"})
        return frozenset(busy | set(self._quarantine))

    def _shared_by_ours_only(self, nodes: set[str]) -> set[str]:
        """Of the partly allocated ``nodes``, those where every job is a running one of ours
        (one ``squeue``, only when there are such nodes; none when it fails)."""
        if not nodes:
            return set()
        try:
            jobs = node_jobs()
        except (BackendError, SlurmParseError):
            return set()
        mine = self.tag + ":"
        return {
            n
            for n in nodes
            if jobs.get(n)
            and all(state == "RUNNING" and comment.startswith(mine) for state, comment in jobs[n])
        }

    def _pilot_unavailable(self) -> frozenset[str]:
        assert self.pilot is not None
        pilot = self.pilot
        with contextlib.suppress(BackendError):
            pilot.update()
            now = time.time()
            if pilot.slurm_id is not None and not self._pilot_jobs:
                if pilot.idle_since is None:
                    pilot.idle_since = now
                elif now - pilot.idle_since >= pilot.idle_s:
                    pilot.release()
            elif self._pilot_jobs:
                pilot.idle_since = None
        if not pilot.running or pilot.ending(time.time()):
            return frozenset(self.pool)
        mine = set(pilot.nodes)
        return frozenset(n for n in self.pool if n not in mine)

    def demand(self, nodes: int) -> None:
        """Jobs asking for ``nodes`` nodes in all wait: a pilot backend without an allocation
        asks for one."""
        pilot = self.pilot
        if pilot is None or nodes <= 0:
            return
        pilot.idle_since = None  # jobs wait: the allocation is not idle
        if pilot.slurm_id is not None and pilot.ending(time.time()) and not self._pilot_jobs:
            # Too little time left for new jobs and none of ours in it: swap it for a fresh one.
            with contextlib.suppress(BackendError):
                pilot.release()
        if pilot.slurm_id is None:
            with contextlib.suppress(BackendError):
                pilot.acquire(time.time())

    def close(self) -> None:
        pilot = self.pilot
        if pilot is not None and pilot.slurm_id is not None and not self._pilot_jobs:
            with contextlib.suppress(BackendError):
                pilot.release()
