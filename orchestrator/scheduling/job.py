"""The job lifecycle: one Enum of states and one transition table.

Every state change goes through :func:`check_transition`, which raises on a move the table does
not allow, and is recorded by the store as one event row. The current state of a job is the
``new_state`` of its last event, so replaying the events gives the truth after a crash.

>>> check_transition(JobState.PENDING, JobState.STARTING)
>>> JobState.COMPLETED.is_finished
True
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from orchestrator.exceptions import IllegalTransitionError

__all__ = [
    "ALLOWED",
    "FINISHED_STATES",
    "FINISHED_VALUES",
    "JobState",
    "check_transition",
]


class JobState(StrEnum):
    """Where a job is in its life.

    * ``PENDING``: waiting for nodes, dependencies, a retry backoff or an array slot.
    * ``HELD``: waiting, but never scheduled until released.
    * ``STARTING``: nodes allocated, the backend is launching it.
    * ``RUNNING``: its processes run.
    * ``COMPLETED``: every task exited with status 0.
    * ``FAILED``: a task exited non-zero (or the backend could not start it).
    * ``CANCELLED``: cancelled by a user, or its dependency can never be satisfied.
    * ``TIMEOUT``: killed at its walltime limit.
    * ``PREEMPTED``: stopped by the scheduler (daemon stop with requeue); goes back to PENDING.
    * ``NODE_FAIL``: its processes were lost (a node, or the daemon, went away).

    ``FAILED`` and ``NODE_FAIL`` go back to ``PENDING`` when the job's retry policy allows; the
    two events are written in one transaction, so no reader sees the intermediate state.
    """

    PENDING = "PENDING"
    HELD = "HELD"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    PREEMPTED = "PREEMPTED"
    NODE_FAIL = "NODE_FAIL"

    @property
    def is_finished(self) -> bool:
        """True for states a job can end in (a retry may still requeue FAILED and NODE_FAIL)."""
        return self in FINISHED_STATES

    @property
    def is_waiting(self) -> bool:
        """True while the job waits in the queue."""
        return self in (JobState.PENDING, JobState.HELD)


FINISHED_STATES = frozenset(
    {
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMEOUT,
        JobState.NODE_FAIL,
    }
)
FINISHED_VALUES = frozenset(state.value for state in FINISHED_STATES)
"""The names of :data:`FINISHED_STATES`, for states read as text (JSON documents, store rows)."""

ALLOWED: Mapping[JobState | None, frozenset[JobState]] = {
    # None: a job being created (its first event).
    None: frozenset({JobState.PENDING, JobState.HELD}),
    JobState.PENDING: frozenset({JobState.HELD, JobState.STARTING, JobState.CANCELLED}),
    JobState.HELD: frozenset({JobState.PENDING, JobState.CANCELLED}),
    JobState.STARTING: frozenset(
        {
            JobState.RUNNING,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.NODE_FAIL,
            JobState.PREEMPTED,
        }
    ),
    JobState.RUNNING: frozenset(
        {
            JobState.COMPLETED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.TIMEOUT,
            JobState.PREEMPTED,
            JobState.NODE_FAIL,
        }
    ),
    JobState.PREEMPTED: frozenset({JobState.PENDING}),
    # Retries: a failed attempt is requeued by the job's retry policy.
    JobState.FAILED: frozenset({JobState.PENDING}),
    JobState.NODE_FAIL: frozenset({JobState.PENDING}),
    JobState.COMPLETED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.TIMEOUT: frozenset(),
}


def check_transition(old: JobState | None, new: JobState) -> None:
    """Raise :class:`IllegalTransitionError` unless ``old -> new`` is in :data:`ALLOWED`."""
    if new not in ALLOWED[old]:
        allowed = ", ".join(sorted(ALLOWED[old])) or "none (final state)"
        raise IllegalTransitionError(
            f"job state {old} -> {new} is not allowed; from {old} the allowed moves are: {allowed}"
        )
