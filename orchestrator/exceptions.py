"""The one exception hierarchy of orchestrator.

Every error a user can cause derives from :class:`OrchestratorError`. Errors about input name the
field, the value that came, and an example of a valid value, so a message alone tells how to fix it.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "ClusterConfigError",
    "DaemonError",
    "IdempotencyKeyReusedError",
    "IllegalTransitionError",
    "InvalidRequestError",
    "JobNotFoundError",
    "JobStateError",
    "OrchestratorError",
    "PolicyFileError",
    "StoreError",
    "StoreUnavailableError",
    "TraceFormatError",
]


class OrchestratorError(Exception):
    """Root of all errors raised by orchestrator."""


class InvalidRequestError(OrchestratorError, ValueError):
    """A job request field is malformed or impossible on the target cluster.

    Args:
        field: The request field at fault, e.g. ``"shape"``.
        value: The value that was given.
        reason: What is wrong with it.
        example: A valid value for the field.
    """

    def __init__(self, field: str, value: object, reason: str, example: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        self.example = example
        # An example may name another field ("nodes=4" to replace a shape on a flat cluster).
        shown = example if "=" in example else f"{field}={example}"
        super().__init__(f"invalid {field}={_short_repr(value)}: {reason} (for example: {shown})")


def _short_repr(value: object, most: int = 200) -> str:
    """``repr(value)``, cut to ``most`` characters: an error never echoes a megabyte back (nor
    fails on an integer too long for ``repr``)."""
    try:
        text = repr(value)
    except ValueError:
        return f"<{type(value).__name__} too long to show>"
    return text if len(text) <= most else text[: most - 3] + "..."


class PolicyFileError(OrchestratorError, ValueError):
    """A tuned-policy file (``--order tuned:FILE``) is missing, not YAML, or has a wrong field.

    Args: as :class:`InvalidRequestError`'s.
    """

    def __init__(self, field: str, value: object, reason: str, example: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        self.example = example
        super().__init__(
            f"invalid policy {field}={_short_repr(value)}: {reason} (for example: {example})"
        )


class IdempotencyKeyReusedError(OrchestratorError):
    """An idempotency key came again with another request than the one it was first sent with:
    a retry must repeat its request exactly, a new request needs a new key.

    Args:
        key: The client's key.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(
            f"Idempotency-Key {_short_repr(key)} was already used for another request (another "
            "body or route); a retry must send the same request, a new request needs a new key"
        )


class ClusterConfigError(OrchestratorError, ValueError):
    """A cluster preset or topology description is malformed."""


class TraceFormatError(OrchestratorError, ValueError):
    """A workload trace line cannot be parsed.

    Args:
        path: The trace file.
        line: The 1-based line number.
        field: The SWF field name (or ``"line"`` for a structural problem).
        message: What is wrong.
    """

    def __init__(self, path: str, line: int, field: str, message: str) -> None:
        self.path = path
        self.line = line
        self.field = field
        super().__init__(f"{path}:{line}: field {field!r}: {message}")


class IllegalTransitionError(OrchestratorError):
    """A job state change that the lifecycle's transition table does not allow (a bug)."""


class JobNotFoundError(OrchestratorError, LookupError):
    """No job has the given id.

    Args:
        job_id: The id that was asked for.
    """

    def __init__(self, job_id: object) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r} (list jobs with `orch queue --all`)")


class JobStateError(OrchestratorError):
    """An action that the job's current state does not allow (cancel a finished job, ...)."""


class StoreError(OrchestratorError):
    """The job store cannot be opened, migrated or written."""


class StoreUnavailableError(StoreError):
    """A write to the job store failed for a reason outside the job (disk full, database locked,
    connection lost): nothing of the change was stored; the same change may succeed later.

    Args:
        cause: The database's own words (``database or disk is full``).
    """

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__(f"the job store cannot be written: {cause}")


class BackendError(OrchestratorError):
    """A backend could not start, poll or signal a job."""


class DaemonError(OrchestratorError):
    """The daemon cannot be reached, started or stopped."""
