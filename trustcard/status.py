"""How RQ's job states and failure records read to clients.

Kept apart from the task service because it is pure: no Redis, easy to test, and the
one place that decides what `status` and `error` say.
"""

from __future__ import annotations

from enum import Enum

from rq.job import JobStatus

from trustcard import failures

CANCEL_FIELD = "trustcard_cancel_requested"
"""Hash field on the job's key, set when a client cancels. A field of its own, not
`meta`: job code saves `meta` for progress and would overwrite the flag."""


class TaskStatus(str, Enum):
    """The five statuses of the HTTP contract."""

    PENDING = "pending"
    STARTED = "started"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def has_ended(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


_FROM_RQ: dict[str, TaskStatus] = {
    JobStatus.CREATED: TaskStatus.PENDING,
    JobStatus.QUEUED: TaskStatus.PENDING,
    JobStatus.DEFERRED: TaskStatus.PENDING,
    JobStatus.SCHEDULED: TaskStatus.PENDING,
    JobStatus.STARTED: TaskStatus.STARTED,
    JobStatus.FINISHED: TaskStatus.COMPLETED,
    JobStatus.FAILED: TaskStatus.FAILED,
    JobStatus.STOPPED: TaskStatus.CANCELLED,
    JobStatus.CANCELED: TaskStatus.CANCELLED,
}


def task_status(rq_status: str | None, cancel_requested: bool) -> TaskStatus:
    """Map an RQ status to ours. A cancelled task that has not completed reads `cancelled`:
    the stop command ends it within moments, and it will never run again."""
    try:
        status = _FROM_RQ[JobStatus(rq_status)]
    except ValueError:
        status = TaskStatus.PENDING  # no status stored yet: the job is being created
    if cancel_requested and status is not TaskStatus.COMPLETED:
        return TaskStatus.CANCELLED
    return status


def summarise_failure(exc_string: str | None) -> str:
    """One line that says why a job failed; never a traceback (see `trustcard.failures`)."""
    return failures.summarise(exc_string)
