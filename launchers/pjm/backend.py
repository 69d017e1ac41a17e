"""The PJM backend: runs allocated jobs through Fujitsu PJM (``pjsub``, ``pjstat``, ``pjdel``).

Two ways to use a PJM machine (``--backend-opt mode=direct|pilot``):

* **direct**: one PJM job per job of ours. Its ``#PJM -L node=`` is the request's shape (a
  torus cluster) or its node count, its elapse limit the walltime plus a margin (the daemon
  enforces the walltime itself, so PJM's limit only catches a daemon that is down), its ranks
  ``--mpi proc=`` and ``max-proc-per-node=``. PJM chooses the nodes: the node names our allocator
  chose are what the job is told (``ORCH_NODELIST``), not where PJM runs it.
* **pilot**: one PJM allocation of a fixed shape (``pilot_shape=AxBxC``), given to the daemon as
  its cluster (:func:`pilot_cluster`), so our own allocator packs many jobs into sub-boxes of it;
  an agent inside the allocation (``_pjm_pilot.py``) starts each with ``mpiexec -vcoordfile``,
  one line of node coordinates per rank. This is how many small jobs run on Fugaku, where the
  number of PJM jobs per user is capped. The allocation is submitted when a job needs it and
  given back when the agent has been idle ``pilot_idle`` seconds; when it ends under running
  jobs (elapse, pjdel) they are requeued (:attr:`Liveness.REQUEUE`).

In both modes every rank runs under :mod:`.supervisor`, which exports the same rank variables as
the local backend, labels each output line with its rank and records the exit status in the
job's folder (a shared file system), so a restarted daemon re-attaches by the handle alone.

Polling is one ``pjstat`` call per tick for every job (plus one ``pjstat -H`` for jobs that
left the queue without leaving every rank's status). Nodes that are not ours: PJM shows no other
user's jobs, so :meth:`PjmBackend.unavailable_nodes` knows none.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from launchers.pjm.text import (
    PjmError,
    PjmNoSuchJobError,
    PjmScript,
    final_state,
    parse_pjdel,
    parse_pjstat,
    parse_pjsub,
    render_pjm_script,
    vcoord_file,
)
from orchestrator.backends.contract import (
    Handle,
    LaunchSpec,
    Liveness,
    PollResult,
    TaskUsage,
    usage_of,
)
from orchestrator.backends.jobfolder import JobFolderBackend, PreparedJob, free_port
from orchestrator.backends.options import option, parse_options
from orchestrator.exceptions import BackendError, InvalidRequestError
from orchestrator.nodeside.files import atomic_write
from orchestrator.resources.cluster import Cluster
from orchestrator.resources.request import Shape, parse_shape
from orchestrator.resources.topology import NodeResources, Torus3DTopology
from orchestrator.scheduling.job import JobState

__all__ = ["PjmBackend", "pilot_cluster"]

HERE = Path(__file__).resolve().parent
SUPERVISOR = HERE / "supervisor.py"
AGENT = HERE / "agent.py"


@dataclass(frozen=True)
class PjmOptions:
    """``--backend pjm`` options (``--backend-opt KEY=VALUE``)."""

    mode: str = option("direct", "direct or pilot", "pilot", choices=("direct", "pilot"))
    rscgrp: str | None = option(None, "the resource group", "small")
    group: str | None = option(None, "the project group (-g)", "hp000000")
    elapse: float = option(
        3600.0, "the pilot allocation's elapse (direct: jobs without walltime)", "01:00:00",
        seconds=True,
    )  # fmt: skip
    elapse_margin: float = option(
        60.0, "seconds PJM's elapse limit exceeds a job's walltime (direct)", "60", seconds=True
    )
    pilot_shape: str | None = option(
        None, "the pilot allocation's shape (none: the cluster's dims)", "2x3x2"
    )
    pilot_idle: float = option(
        60.0, "seconds the pilot agent waits idle before giving the allocation back", "60",
        seconds=True,
    )  # fmt: skip
    pilot_wait: float = option(
        2.0, "seconds a scheduling pass waits for a new allocation to start", "2", seconds=True
    )
    python: str = option(
        sys.executable, "the interpreter of the rank supervisor and the agent", "/usr/bin/python3"
    )
    inherit_env: bool = option(True, "jobs inherit the daemon's environment (0: no #PJM -X)", "0")
    master_addr: str = option(
        "rank0", "rank0 (rank 0 publishes its host and a free port) or a fixed address", "rank0"
    )
    requeue_code: int | None = option(
        3, "the exit status meaning 'checkpointed, requeue me' after PJM's SIGTERM", "3"
    )


COMMAND_TIMEOUT_S = 60.0


def pilot_cluster(shape: str, node: NodeResources | None = None) -> Cluster:
    """The daemon's cluster for a pilot allocation of ``shape`` (``AxBxC``): a torus of that
    shape whose node ``t{x}-{y}-{z}`` is the allocation's node at those coordinates.

    >>> pilot_cluster("2x3x2").size
    12
    """
    extents = parse_shape(shape).extents3
    return Cluster(
        name=f"pjm-pilot-{extents[0]}x{extents[1]}x{extents[2]}",
        topology=Torus3DTopology(extents),
        node=node or NodeResources(cpus=48, memory_mb=32768),
    )


def _node_coords(name: str) -> tuple[int, int, int]:
    """``t1-2-0`` -> ``(1, 2, 0)`` (names of :class:`Torus3DTopology`)."""
    try:
        x, y, z = (int(v) for v in name[1:].split("-"))
    except ValueError:
        raise BackendError(f"node {name!r} is not a torus node name tX-Y-Z") from None
    return (x, y, z)


def _box_coords(extents: Sequence[int], count: int) -> list[tuple[int, ...]]:
    """The first ``count`` coordinates of a box, last axis fastest (rank order of a shape)."""
    out: list[tuple[int, ...]] = []
    for k in range(count):
        coords: list[int] = []
        rest = k
        for e in reversed(extents):
            rest, c = divmod(rest, e)
            coords.append(c)
        out.append(tuple(reversed(coords)))
    return out


def _extents(spec: LaunchSpec, shape: Shape | None) -> tuple[int, ...]:
    """The box the ranks of a direct job are placed in (relative coordinates).

    A torus request can hold more nodes than its shape (whole Tofu units, by our allocator as by
    PJM): then the box is the block's own extent per axis.
    """
    if shape is None:
        return (len(spec.nodes),)
    if shape.volume == len(spec.nodes):
        return shape.extents
    try:
        axes = list(zip(*(_node_coords(n) for n in spec.nodes), strict=True))
    except BackendError:
        return (len(spec.nodes),)
    extents = tuple(len(set(axis)) for axis in axes)
    return extents if math.prod(extents) == len(spec.nodes) else (len(spec.nodes),)


def _pilot_shape(cluster: Cluster, opts: PjmOptions) -> Shape:
    """The pilot allocation's shape: the daemon's cluster must be a torus of that shape."""
    topo = cluster.topology
    if not isinstance(topo, Torus3DTopology):
        raise InvalidRequestError(
            "cluster", cluster.name, "pilot mode schedules a torus of the allocation's "
            "shape (launchers.pjm.pilot_cluster)", "pjm-pilot-2x3x2",
        )  # fmt: skip
    shape = parse_shape(opts.pilot_shape or "x".join(map(str, topo.dims)))
    if shape.extents3 != topo.dims:
        raise InvalidRequestError(
            "pilot_shape", str(shape), f"the cluster {cluster.name!r} is "
            "{}x{}x{}: they must be the same".format(*topo.dims),
            "x".join(map(str, topo.dims)),
        )  # fmt: skip
    return shape


class PjmBackend(JobFolderBackend):
    """Runs jobs through PJM, direct or inside a pilot allocation (see the module docstring).

    Args:
        root: The daemon's state folder; jobs live in ``root/jobs/<id>/`` (stdout, stderr,
            ``attempt-<n>/``) and pilots in ``root/pjm/pilots/<n>/``. It must be on a file
            system the compute nodes share.
        mode: ``direct`` or ``pilot``.
        pilot_shape: The pilot allocation's shape (pilot mode).
    """

    name = "pjm"
    shares_nodes = False  # pjsub hands out whole nodes; Fugaku's jobs hold them

    def __init__(
        self,
        root: Path,
        *,
        mode: str = "direct",
        rscgrp: str | None = None,
        group: str | None = None,
        elapse_s: float = 3600.0,
        elapse_margin_s: float = 60.0,
        pilot_shape: Shape | None = None,
        pilot_idle_s: float = 60.0,
        pilot_wait_s: float = 2.0,
        python: str = sys.executable,
        inherit_env: bool = True,
        master_addr: str = "rank0",
        requeue_code: int | None = 3,
    ) -> None:
        if mode not in ("direct", "pilot"):
            raise InvalidRequestError("mode", mode, "expected direct or pilot", "pilot")
        if mode == "pilot" and pilot_shape is None:
            raise InvalidRequestError("pilot_shape", None, "pilot mode needs a shape", "2x3x2")
        self.root = Path(root)
        self.mode = mode
        self.rscgrp = rscgrp
        self.group = group
        self.elapse_s = elapse_s
        self.elapse_margin_s = elapse_margin_s
        self.pilot_shape = pilot_shape
        self.pilot_idle_s = pilot_idle_s
        self.pilot_wait_s = pilot_wait_s
        self.python = python
        self.inherit_env = inherit_env
        self.master_addr = master_addr
        self.requeue_code = requeue_code
        self.pilots = self.root / "pjm" / "pilots"
        self.commands_run = 0
        """External commands run so far (benchmarks and tests count them)."""

    @classmethod
    def create(cls, root: Path, cluster: Cluster, options: Mapping[str, str]) -> PjmBackend:
        """``--backend pjm`` with the options of :class:`PjmOptions`."""
        opts = parse_options(PjmOptions, options, cls.name)
        return cls(
            root,
            mode=opts.mode,
            rscgrp=opts.rscgrp,
            group=opts.group,
            elapse_s=opts.elapse,
            elapse_margin_s=opts.elapse_margin,
            pilot_shape=_pilot_shape(cluster, opts) if opts.mode == "pilot" else None,
            pilot_idle_s=opts.pilot_idle,
            pilot_wait_s=opts.pilot_wait,
            python=opts.python,
            inherit_env=opts.inherit_env,
            master_addr=opts.master_addr,
            requeue_code=opts.requeue_code,
        )

    # -- commands -------------------------------------------------------------------------------

    def check(self) -> None:
        missing = [c for c in ("pjsub", "pjstat", "pjdel") if shutil.which(c) is None]
        if missing:
            raise BackendError(
                f"{', '.join(missing)} not on PATH: the pjm backend runs on a PJM login node"
            )

    def _run(self, argv: list[str], cwd: Path | None = None) -> str:
        """Run a PJM command; its stdout and stderr together (PJM prints errors on either)."""
        if shutil.which(argv[0]) is None:
            raise BackendError(f"{argv[0]} is not on PATH: is this a PJM login node?")
        self.commands_run += 1
        try:
            done = subprocess.run(
                argv,
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise BackendError(f"{' '.join(argv)} failed: {e}") from e
        return done.stdout + done.stderr

    def _pjstat(self, *args: str) -> dict[str, dict[str, str]]:
        text = self._run(["pjstat", *args])
        try:
            return {row.job_id: dict(row.columns) for row in parse_pjstat(text)}
        except PjmError as e:
            raise BackendError(f"pjstat: {e}") from e

    def _pjdel(self, pjm_id: str) -> None:
        try:
            parse_pjdel(self._run(["pjdel", pjm_id]))
        except PjmNoSuchJobError:
            pass  # already ended: nothing to delete
        except PjmError as e:
            raise BackendError(f"pjdel {pjm_id}: {e}") from e

    # -- start ----------------------------------------------------------------------------------

    def _write_job_file(self, job: PreparedJob, coords: list[tuple[int, ...]]) -> None:
        """Write the attempt's job file (what the rank supervisors read) and rank placement."""
        spec, paths, folder = job.spec, job.paths, job.attempt_dir
        tpn = spec.tasks_per_node
        env = self.job_environment(spec)
        rendezvous = self.master_addr == "rank0"
        if not rendezvous:
            env.update({"MASTER_ADDR": self.master_addr, "MASTER_PORT": str(free_port())})
        document = {
            "rendezvous": rendezvous,
            "dir": str(folder),
            "argv": job.argv,
            "cwd": job.cwd,
            "env": env,
            "nodes": list(spec.nodes),
            "tasks_per_node": tpn,
            "ranks": job.ntasks,
            "python": self.python,
            "stdout": str(paths.stdout),
            "stderr": str(paths.stderr),
        }
        atomic_write(folder / "job.json", json.dumps(document))
        # One line per rank, ranks of a node together (node-rank order, as the other backends).
        atomic_write(folder / "vcoord", vcoord_file([c for c in coords for _ in range(tpn)]))

    def _launch(self, job: PreparedJob) -> Handle:
        spec, folder = job.spec, job.attempt_dir
        shape = parse_shape(spec.shape) if spec.shape and self.mode != "pilot" else None
        try:
            if self.mode == "pilot":
                self._write_job_file(job, [_node_coords(n) for n in spec.nodes])
                return self._start_pilot(spec, folder)
            coords = _box_coords(_extents(spec, shape), len(spec.nodes))
            self._write_job_file(job, coords)
        except OSError as e:
            raise BackendError(f"job {spec.job_id}: cannot prepare {folder}: {e}") from e
        return self._start_direct(spec, folder, shape)

    def _start_direct(self, spec: LaunchSpec, folder: Path, shape: Shape | None) -> Handle:
        elapse = (
            spec.walltime_s + self.elapse_margin_s if spec.walltime_s is not None else self.elapse_s
        )
        script = PjmScript(
            name=f"orch{spec.job_id}",
            argv=[self.python, "-I", "-S", str(SUPERVISOR), str(folder / "job.json")],
            nodes=None if shape is not None else len(spec.nodes),
            shape=shape,
            rscgrp=self.rscgrp,
            elapse_s=elapse,
            mpi_proc=len(spec.nodes) * spec.tasks_per_node,
            max_proc_per_node=spec.tasks_per_node,
            group=self.group,
            stdout=str(folder / "pjm.out"),
            stderr=str(folder / "pjm.err"),
            mpiexec=True,
            vcoordfile=str(folder / "vcoord"),
            export_all=self.inherit_env,
            trap_term=True,
        )
        path = folder / "pjm.sh"
        atomic_write(path, render_pjm_script(script))
        pjm_id = self._submit(["pjsub", str(path)], folder, f"job {spec.job_id}")
        atomic_write(folder / "pjm_id", pjm_id + "\n")
        return {
            "mode": "direct",
            "attempt": spec.attempt,
            "dir": str(folder),
            "pjm_id": pjm_id,
            "ranks": len(spec.nodes) * spec.tasks_per_node,
        }

    def _submit(self, argv: list[str], cwd: Path, what: str) -> str:
        text = self._run(argv, cwd=cwd)
        try:
            return parse_pjsub(text)
        except PjmError as e:
            raise BackendError(f"{what}: pjsub refused it: {e}") from e

    # -- pilot ----------------------------------------------------------------------------------

    def _current_pilot(self) -> Path | None:
        try:
            name = (self.root / "pjm" / "current").read_text().strip()
        except FileNotFoundError:
            return None
        spool = self.pilots / name
        return None if (spool / "closed").exists() else spool

    @staticmethod
    def _pilot_id(spool: Path) -> str | None:
        try:
            return (spool / "pjm_id").read_text().strip()
        except FileNotFoundError:
            return None

    def _new_pilot(self) -> Path:
        assert self.pilot_shape is not None
        self.pilots.mkdir(parents=True, exist_ok=True)
        numbers = [int(p.name) for p in self.pilots.iterdir() if p.name.isdigit()]
        number = 1 + max(numbers, default=0)
        spool = self.pilots / str(number)
        for sub in ("inbox", "accepted", "rejected"):
            (spool / sub).mkdir(parents=True, exist_ok=True)
        script = PjmScript(
            name="orch-pilot",
            argv=[self.python, "-I", "-S", str(AGENT), str(spool), f"{self.pilot_idle_s:g}"],
            shape=self.pilot_shape,
            rscgrp=self.rscgrp,
            elapse_s=self.elapse_s,
            group=self.group,
            stdout=str(spool / "pjm.out"),
            stderr=str(spool / "pjm.err"),
            export_all=self.inherit_env,
            trap_term=True,
        )
        path = spool / "pilot.sh"
        atomic_write(path, render_pjm_script(script))
        pjm_id = self._submit(["pjsub", str(path)], spool, "pilot allocation")
        atomic_write(spool / "pjm_id", pjm_id + "\n")
        atomic_write(self.root / "pjm" / "current", spool.name + "\n")
        return spool

    def _start_pilot(self, spec: LaunchSpec, folder: Path) -> Handle:
        spool = self._current_pilot() or self._new_pilot()
        key = f"{spec.job_id}-{spec.attempt}"
        atomic_write(folder / "pilot", str(spool) + "\n")
        entry: dict[str, Any] = {
            "dir": str(folder),
            "ranks": len(spec.nodes) * spec.tasks_per_node,
            "python": self.python,
        }
        atomic_write(spool / "inbox" / f"{key}.json", json.dumps(entry))
        return {
            "mode": "pilot",
            "attempt": spec.attempt,
            "dir": str(folder),
            "pilot": str(spool),
            "pjm_id": (spool / "pjm_id").read_text().strip(),
            "key": key,
            "ranks": entry["ranks"],
        }

    # -- poll -----------------------------------------------------------------------------------

    def _codes(self, handle: Handle) -> tuple[list[int | None], bool, tuple[TaskUsage | None, ...]]:
        """Per rank the recorded status (None: none yet), whether the engine ended one, and
        what the ranks that ended used (:attr:`PollResult.usage`)."""
        ends = self.task_ends(handle["dir"], int(handle["ranks"]))
        codes = [end.code if end is not None else None for end in ends]
        engine = any(end is not None and end.signal is not None for end in ends)
        return codes, engine, usage_of(ends)

    def _checkpointed(self, codes: Sequence[int | None]) -> bool:
        """PJM signalled the job (elapse, pjdel) and every failed rank exited with the
        requeue code: "checkpointed, run me again"."""
        failed = [c for c in codes if c not in (None, 0)]
        return (
            self.requeue_code is not None
            and bool(failed)
            and all(c == self.requeue_code for c in failed)
        )

    def poll(self, handles: Mapping[int, Handle]) -> dict[int, PollResult]:
        if not handles:
            return {}
        live = {pjm_id for pjm_id, row in self._pjstat("--choose", "jid,st").items() if _live(row)}
        current = self._current_pilot()
        if current is not None and self._pilot_id(current) not in (None, *live):
            self._mark_closed(current)  # ended (elapse, pjdel): the next job needs another
        out: dict[int, PollResult] = {}
        gone: dict[int, Handle] = {}
        for job_id, handle in handles.items():
            result = self._poll_listed(handle, live)
            if result is None:
                gone[job_id] = handle
            else:
                out[job_id] = result
        if gone:
            out.update(self._poll_gone(gone))
        return out

    def _poll_listed(self, handle: Handle, live: set[str]) -> PollResult | None:
        """A job's state from its ranks' records and pjstat's live jobs; None when its PJM job
        has left the queue without every rank's record (:meth:`_poll_gone` looks further)."""
        codes, engine, usage = self._codes(handle)
        result = self._listed(handle, live, codes, engine)
        return None if result is None else replace(result, usage=usage)

    def _listed(
        self, handle: Handle, live: set[str], codes: list[int | None], engine: bool
    ) -> PollResult | None:
        if all(c is not None for c in codes):
            if engine and handle["mode"] == "pilot":
                self._mark_closed(Path(handle["pilot"]))  # the allocation is ending
                return PollResult(Liveness.REQUEUE, tuple(codes))
            if engine and self._checkpointed(codes):
                return PollResult(Liveness.REQUEUE, tuple(codes))
            return PollResult(Liveness.EXITED, tuple(codes))
        alive = sum(c is None for c in codes)
        if handle["mode"] == "pilot":
            rejected = Path(handle["pilot"]) / "rejected" / f"{handle['key']}.json"
            if rejected.exists():
                return PollResult(Liveness.REQUEUE, tuple(codes))
        if handle["pjm_id"] in live:
            return PollResult(Liveness.RUNNING, tuple(codes), alive)
        return None

    def _poll_gone(self, gone: Mapping[int, Handle]) -> dict[int, PollResult]:
        """Jobs whose PJM job has left the queue without every rank's status."""
        ids = sorted({h["pjm_id"] for h in gone.values()})
        history = self._pjstat("-H", "--choose", "jid,st,ec,pc", *ids)
        out: dict[int, PollResult] = {}
        usages: dict[int, tuple[TaskUsage | None, ...]] = {}
        for job_id, handle in gone.items():
            # A rank may have written its record meanwhile.
            codes, engine, usages[job_id] = self._codes(handle)
            if all(c is not None for c in codes):
                liveness = Liveness.REQUEUE if engine and handle["mode"] == "pilot" else None
                out[job_id] = PollResult(liveness or Liveness.EXITED, tuple(codes))
                continue
            row = history.get(handle["pjm_id"])
            if handle["mode"] == "pilot":
                # The allocation ended under the job (elapse, pjdel, node failure): run it again.
                self._mark_closed(Path(handle["pilot"]))
                out[job_id] = PollResult(Liveness.REQUEUE, tuple(codes))
                continue
            ended_as = _ended_as(row)
            if ended_as is JobState.NODE_FAIL:  # a node went down: no fault of the job
                out[job_id] = PollResult(Liveness.REQUEUE, tuple(codes))
            elif row is not None and (
                any(c is not None for c in codes)
                or ended_as in (JobState.CANCELLED, JobState.TIMEOUT)
            ):
                # Killed by PJM (pjdel, elapse) before every rank could record its status.
                filled = tuple(128 + signal.SIGKILL if c is None else c for c in codes)
                out[job_id] = PollResult(Liveness.EXITED, filled)
            else:
                out[job_id] = PollResult(Liveness.LOST, tuple(codes))
        return {job_id: replace(result, usage=usages[job_id]) for job_id, result in out.items()}

    def _mark_closed(self, spool: Path) -> None:
        with contextlib.suppress(OSError):
            if not (spool / "closed").exists():
                atomic_write(spool / "closed", f"{time.time()} (allocation ended)\n")

    # -- the pilot allocation as the daemon's pool ---------------------------------------------

    def demand(self, nodes: int) -> None:
        """Pilot mode: jobs wait and no allocation is held: submit one (it may queue in PJM),
        and wait up to ``pilot_wait`` seconds for it to start, so this very scheduling pass
        can use it (else the jobs wait for the daemon's next pass)."""
        if self.mode != "pilot" or nodes <= 0 or self._current_pilot() is not None:
            return
        spool = self._new_pilot()
        deadline = time.monotonic() + self.pilot_wait_s
        while not (spool / "agent").exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    def unavailable_nodes(self) -> frozenset[str]:
        """Direct mode: none known (PJM shows no other user's jobs). Pilot mode: every node
        until the allocation runs (its agent has started), so a job's walltime never counts
        while the allocation waits in PJM's queue."""
        if self.mode != "pilot":
            return frozenset()
        spool = self._current_pilot()
        if spool is not None and (spool / "agent").exists():
            return frozenset()
        assert self.pilot_shape is not None
        topo = pilot_cluster(str(self.pilot_shape)).topology
        return frozenset(topo.node_name(i) for i in range(topo.size))

    # -- signals, abort, close ------------------------------------------------------------------

    def signal(self, handle: Handle, signum: int) -> None:
        folder = Path(handle["dir"])
        with open(folder / "signals", "a") as f:
            f.write(f"{int(signum)}\n")
        started = any(folder.glob("task-*.pid"))
        if handle["mode"] == "pilot":
            if not started:
                # Not taken by the agent yet: withdraw it (the agent's rename may win instead,
                # then the rank wrappers see the signal before starting the command).
                inbox = Path(handle["pilot"]) / "inbox" / f"{handle['key']}.json"
                with contextlib.suppress(FileNotFoundError):
                    os.rename(inbox, Path(handle["pilot"]) / "rejected" / inbox.name)
            return
        if signum == signal.SIGKILL or not started:
            # Still queued, or it must go now: PJM's own way of ending a job.
            self._pjdel(handle["pjm_id"])

    def _abort_launch(self, job_id: int, attempt: int, attempt_dir: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._pjdel((attempt_dir / "pjm_id").read_text().strip())
        with contextlib.suppress(FileNotFoundError):
            spool = Path((attempt_dir / "pilot").read_text().strip())
            inbox = spool / "inbox" / f"{job_id}-{attempt}.json"
            os.rename(inbox, spool / "rejected" / inbox.name)

    def close(self) -> None:
        """Give back a pilot allocation that runs nothing of ours (daemon stopping)."""
        if self.mode != "pilot":
            return
        spool = self._current_pilot()
        if spool is None:
            return
        busy = any(
            not (Path(json.loads(p.read_text())["dir"]) / "mpiexec.rc").exists()
            for p in (spool / "accepted").glob("*.json")
        )
        if busy or any((spool / "inbox").glob("*.json")):
            return  # its jobs run on; the agent gives the allocation back once idle
        atomic_write(spool / "stop", "daemon stopped\n")
        if not (spool / "agent").exists():
            # Still queued in PJM: no agent will ever read the stop file.
            with contextlib.suppress(BackendError, FileNotFoundError):
                self._pjdel((spool / "pjm_id").read_text().strip())
            self._mark_closed(spool)


def _live(row: Mapping[str, str]) -> bool:
    """A pjstat row of a job that has not ended (a state newer than PJM_STATES counts as live)."""
    try:
        return not final_state(row.get("ST", ""), None).is_finished
    except PjmError:
        return True


def _ended_as(row: Mapping[str, str] | None) -> JobState | None:
    """Our state for a job in pjstat's history (its state and end code), None if unknown."""
    if row is None:
        return None
    end_code = row.get("PC", "")
    try:
        return final_state(row.get("ST", ""), int(end_code) if end_code.isdigit() else None)
    except PjmError:
        return None
