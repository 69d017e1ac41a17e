"""How the Slurm backend turns what Slurm and the task wrappers report into a poll result.

Pure: no subprocess, no clock. The backend gathers a job's Slurm state (one ``squeue`` for all
jobs per tick) and the ``task-<rank>.rc`` files its wrappers wrote, and :func:`decide` says what
the daemon should make of them. Tested on captured text and hand-made cases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from launchers._base import Liveness, PollResult

__all__ = ["SLURM_LIVENESS", "Phase", "TaskEnd", "decide", "parse_rc", "slurm_phase"]


class Phase(StrEnum):
    """What a Slurm job state means for the daemon."""

    ACTIVE = "active"
    """Not ended yet (pending in Slurm counts: the daemon has given it its nodes)."""
    ENDED = "ended"
    """Ended; the tasks' exit codes say how."""
    ENGINE = "engine"
    """Ended by the engine through no fault of the job: requeue it."""


SLURM_LIVENESS: Mapping[str, Phase] = {
    "PENDING": Phase.ACTIVE,
    "CONFIGURING": Phase.ACTIVE,
    "RUNNING": Phase.ACTIVE,
    # Nodes are still being cleaned: keep them ours until Slurm lets go of them, or the next
    # job's --nodelist would wait behind this one.
    "COMPLETING": Phase.ACTIVE,
    "SIGNALING": Phase.ACTIVE,
    "STAGE_OUT": Phase.ACTIVE,
    "RESIZING": Phase.ACTIVE,
    "SUSPENDED": Phase.ACTIVE,
    "STOPPED": Phase.ACTIVE,
    "REQUEUED": Phase.ACTIVE,
    "REQUEUE_FED": Phase.ACTIVE,
    "REQUEUE_HOLD": Phase.ACTIVE,
    "RESV_DEL_HOLD": Phase.ACTIVE,
    "SPECIAL_EXIT": Phase.ACTIVE,
    "COMPLETED": Phase.ENDED,
    "FAILED": Phase.ENDED,
    "CANCELLED": Phase.ENDED,
    "TIMEOUT": Phase.ENDED,
    "OUT_OF_MEMORY": Phase.ENDED,
    "DEADLINE": Phase.ENDED,
    "LAUNCH_FAILED": Phase.ENDED,
    "REVOKED": Phase.ENDED,
    "NODE_FAIL": Phase.ENGINE,
    "BOOT_FAIL": Phase.ENGINE,
    "PREEMPTED": Phase.ENGINE,
}
"""Slurm job state (long name, as ``squeue %T`` / ``sacct State`` print it) -> phase."""


def slurm_phase(state: str) -> Phase:
    """The phase of a state as printed (``CANCELLED by 0``, ``RUNNING+`` work too).

    Raises:
        KeyError: a state Slurm does not have.
    """
    name = state.strip().split()[0].rstrip("+") if state.strip() else ""
    return SLURM_LIVENESS[name]


@dataclass(frozen=True)
class TaskEnd:
    """How one task ended, from its wrapper's ``task-<rank>.rc``."""

    code: int
    signal: str | None = None
    """The first signal the task was sent while it ran (None: none)."""


def parse_rc(text: str) -> TaskEnd | None:
    """``"3 SIGUSR1"`` -> TaskEnd(3, "SIGUSR1"); ``"0 -"`` -> TaskEnd(0); junk -> None.

    >>> parse_rc("143 SIGTERM\\n")
    TaskEnd(code=143, signal='SIGTERM')
    """
    words = text.split()
    if not words or not words[0].isdigit():
        return None
    sig = words[1] if len(words) > 1 and words[1] != "-" else None
    return TaskEnd(int(words[0]), sig)


def _slurm_code(exit_code: tuple[int | None, int | None] | None) -> int | None:
    """sacct's ``code:signal`` as one status (128 + signal for a signal)."""
    if exit_code is None:
        return None
    code, sig = exit_code
    if sig:
        return 128 + sig
    return code


def decide(
    phase: Phase | None,
    tasks: Sequence[TaskEnd | None],
    *,
    slurm_exit: tuple[int | None, int | None] | None = None,
    slurm_completed: bool = False,
    requeue_code: int | None = 3,
    allocation_ended: bool = False,
) -> PollResult:
    """The daemon's view of one job.

    Args:
        phase: The Slurm job's phase (None: Slurm no longer knows the job, or, in pilot mode,
            the task launcher is gone).
        tasks: Per rank, how the task ended (None: no status written).
        slurm_exit: sacct's ``ExitCode`` of the job, used for ranks without a status.
        slurm_completed: Slurm says COMPLETED: a status 0 from ``slurm_exit`` is believed
            (a job cancelled before its tasks ran also shows ``0:0``, and is LOST).
        requeue_code: The exit status that means "I checkpointed on the engine's signal, run me
            again" when the task had been sent a signal (None: no such status).
        allocation_ended: Pilot mode: the allocation the job ran in has ended (time limit,
            cancelled, node failure), so a job that did not complete is requeued.

    The daemon's own signals need no exception here: a job it cancels or times out is
    draining (its poll result only says whether it still runs), and the SIGTERM it sends the
    other ranks when one fails leaves the first failure's status in the codes.

    >>> decide(Phase.ENDED, [TaskEnd(0), TaskEnd(7)]).exit_codes
    (0, 7)
    >>> decide(Phase.ENDED, [TaskEnd(3, "SIGUSR1")]).liveness
    <Liveness.REQUEUE: 'requeue'>
    """
    codes = tuple(t.code if t is not None else None for t in tasks)
    alive = sum(t is None for t in tasks)
    if phase is Phase.ACTIVE:
        return PollResult(Liveness.RUNNING, codes, alive)
    if phase is Phase.ENGINE:
        return PollResult(Liveness.REQUEUE, codes)
    complete = all(c == 0 for c in codes) and None not in codes
    if allocation_ended and not complete:
        return PollResult(Liveness.REQUEUE, codes)
    failed = [t for t in tasks if t is not None and t.code != 0]
    if (
        failed
        and requeue_code is not None
        and all(t.code == requeue_code and t.signal is not None for t in failed)
    ):
        return PollResult(Liveness.REQUEUE, codes)
    if None in codes:
        fill = _slurm_code(slurm_exit) if phase is not None else None
        if fill is None or (fill == 0 and not slurm_completed):
            return PollResult(Liveness.LOST, codes)
        codes = tuple(fill if c is None else c for c in codes)
    return PollResult(Liveness.EXITED, codes)
