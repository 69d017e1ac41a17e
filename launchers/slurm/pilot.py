"""The pilot allocation of the Slurm backend: one batch job holding K nodes for time T.

The daemon packs many of its jobs into sub-blocks of the allocation (each one an ``srun
--jobid=<pilot> --nodelist=... --exact`` step). The allocation is asked for when jobs wait and
none is held, and given back once no job of ours has run in it for ``idle_s`` seconds, or when the
daemon stops with nothing running in it. Its id is kept in ``ROOT/slurm-pilot.json`` so a
restarted daemon adopts it instead of asking for another.
"""

from __future__ import annotations

import contextlib
import json
import math
import shlex
import time
from pathlib import Path

from launchers.slurm.commands import cancel, job_states, sbatch, time_left
from launchers.slurm.text import Phase, SlurmJobRecord, format_time_limit
from orchestrator.nodeside.files import atomic_write

__all__ = ["PilotAllocation", "render_pilot_script", "step_allocation_ended"]

_FRESH_S = 0.25
"""A state read this recently (by the tick's poll) is not read again for the scheduling pass."""


def step_allocation_ended(record: SlurmJobRecord | None) -> bool:
    """The allocation a step ran in has ended or is ending (steps live only while it runs)."""
    return record is None or record.phase not in (Phase.RUNNING, Phase.WAITING)


def render_pilot_script(
    *, name: str, nodes: int, time_s: float, output: str, comment: str, partition: str | None
) -> str:
    """The holder script: asks for ``nodes`` whole nodes for ``time_s`` and sleeps; the steps
    we launch into it do the work. Every value quoted.

    Whole nodes with all they have: ``--exclusive`` gives the allocation every GPU of its nodes
    (Slurm 22.05 allocates all generic resources of an exclusive job's nodes) and ``--mem=0``
    all their memory (else only ``DefMemPerCPU`` per CPU, and a step asking ``--mem`` for more
    could not start). A step that asks for no memory is given its nodes' memory without
    reserving it, so such steps still run side by side (tested on Slurm 22.05)."""
    options = {
        "--job-name": name,
        "--nodes": str(nodes),
        "--time": format_time_limit(time_s),
        "--output": output,
        "--comment": comment,
        "--mem": "0",
    }
    if partition:
        options["--partition"] = partition
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {k}={shlex.quote(v)}" for k, v in options.items()]
    # Whole nodes (our allocator gives whole nodes), and no requeue by Slurm: when the
    # allocation ends, the daemon requeues the jobs that ran in it, on the next allocation.
    lines += ["#SBATCH --exclusive", "#SBATCH --no-requeue", "exec sleep infinity"]
    return "\n".join(lines) + "\n"


class PilotAllocation:
    """One held allocation (or none).

    Args:
        root: The backend's state folder.
        tag: This backend's tag (the allocation's ``--comment``, naming its owner).
        nodes: K, the nodes asked for.
        time_s: T, the allocation's time limit.
        idle_s: Give the allocation back after this long without a job of ours in it.
        margin_s: With less than this left before its time limit, the allocation takes no new
            job (it would be killed soon after starting); once empty it is given back and the
            next one is asked for.
        partition: The Slurm partition (None: the default one).
    """

    def __init__(
        self,
        root: Path,
        tag: str,
        *,
        nodes: int,
        time_s: float,
        idle_s: float,
        partition: str | None,
        margin_s: float = 60.0,
    ) -> None:
        self.root = root
        self.tag = tag
        self.size = nodes
        self.time_s = time_s
        self.idle_s = idle_s
        self.margin_s = margin_s
        self.partition = partition
        self.state_file = root / "slurm-pilot.json"
        self.slurm_id: str | None = None
        self.phase: Phase | None = None
        self.nodes: tuple[str, ...] = ()
        self.idle_since: float | None = None
        self.ends_at: float | None = None
        """When Slurm's time limit ends the allocation (epoch seconds; None: not known)."""
        self._checked = -math.inf
        self._load()

    def _load(self) -> None:
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            self.slurm_id = str(json.loads(self.state_file.read_text())["slurm_id"])

    @property
    def running(self) -> bool:
        """The allocation is granted and its nodes known."""
        return self.slurm_id is not None and self.phase is Phase.RUNNING and bool(self.nodes)

    def update(self, records: dict[str, SlurmJobRecord] | None = None) -> None:
        """Refresh from ``records`` (a poll's squeue) or one ``squeue`` of its own, unless the
        poll of this very tick has just refreshed it."""
        if self.slurm_id is None:
            return
        if records is None and time.monotonic() - self._checked < _FRESH_S:
            return
        if records is None or self.slurm_id not in records:
            records = job_states([self.slurm_id])
        self._checked = time.monotonic()
        record = records.get(self.slurm_id)
        phase = record.phase if record is not None else None
        if record is not None and phase is Phase.WAITING:
            self.phase, self.nodes = Phase.WAITING, ()
        elif record is not None and phase is Phase.RUNNING:
            self.phase, self.nodes = Phase.RUNNING, record.nodes
            if self.ends_at is None:
                left = time_left(self.slurm_id)  # once per allocation
                self.ends_at = time.time() + (left if left is not None else math.inf)
        else:
            # Ended, or ending (COMPLETING): no step can start in it any more.
            self._forget()

    def ending(self, now: float) -> bool:
        """Less than ``margin_s`` is left before the allocation's time limit."""
        return self.ends_at is not None and self.ends_at - now < self.margin_s

    def acquire(self, now: float, wait_s: float = 3.0) -> None:
        """Ask Slurm for the allocation and wait up to ``wait_s`` for it to start: on a quiet
        cluster it does within a second, and the daemon can place jobs in the same pass
        instead of at its next periodic one. A pilot that pends longer is picked up later."""
        script = render_pilot_script(
            name=f"{self.tag}-pilot",
            nodes=self.size,
            time_s=self.time_s,
            output=str(self.root / "pilot-%j.out"),
            comment=self.tag,
            partition=self.partition,
        )
        self.slurm_id = sbatch(script)
        self.phase, self.nodes, self.idle_since = Phase.WAITING, (), now
        atomic_write(self.state_file, json.dumps({"slurm_id": self.slurm_id}))
        deadline = time.monotonic() + wait_s
        while self.slurm_id is not None and not self.running and time.monotonic() < deadline:
            time.sleep(0.05)
            self.update(job_states([self.slurm_id]))

    def release(self) -> None:
        """Give the allocation back (steps still in it are killed by Slurm)."""
        if self.slurm_id is not None:
            cancel(self.slurm_id)
        self._forget()

    def _forget(self) -> None:
        self.slurm_id, self.phase, self.nodes, self.idle_since = None, None, (), None
        self.ends_at = None
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()
