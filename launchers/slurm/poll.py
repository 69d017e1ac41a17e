"""How the Slurm backend turns what Slurm and the task wrappers report into a poll result.

Pure: no subprocess, no clock. The backend gathers a job's Slurm state (one ``squeue`` for all
jobs per tick) and the task records its supervisors wrote, and :func:`decide` says what
the daemon should make of them. Tested on captured text and hand-made cases.
"""

from __future__ import annotations

from collections.abc import Sequence

from launchers.slurm.text import Phase
from orchestrator.backends.contract import Liveness, PollResult
from orchestrator.nodeside.record import TaskEnd

__all__ = ["decide"]


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
    if phase is not None and phase.is_active:
        return PollResult(Liveness.RUNNING, codes, alive)
    if phase is Phase.REQUEUE:
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
