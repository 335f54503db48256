"""How RQ's job states and failure records read to clients.

Kept apart from the task service because it is pure: no Redis, easy to test, and the
one place that decides what `status` and `error` say.
"""

from __future__ import annotations

import re
from enum import Enum

from rq.job import JobStatus

MAX_ERROR_LENGTH = 500
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


_SOFT_TIMEOUT = re.compile(r"JobTimeoutException: .*?\((\d+) seconds\)")
_KILLED = re.compile(r"waitpid returned (\d+)(?: \(signal (\d+)\))?")


def summarise_failure(exc_string: str | None) -> str:
    """One line that says why a job failed; never a traceback."""
    if not exc_string or not exc_string.strip():
        return "The job failed without recording a reason."
    soft = _SOFT_TIMEOUT.search(exc_string)
    if soft:
        return f"Timed out: the job ran past its soft time limit of {soft.group(1)} s."
    if "AbandonedJobError" in exc_string:
        return "Abandoned: the worker running this task stopped before it finished (killed or lost)."
    killed = _KILLED.search(exc_string)
    if killed and "terminated unexpectedly" in exc_string:
        signal_number = killed.group(2)
        if signal_number:
            return (
                f"The job's process was killed by signal {signal_number}"
                f"{' (SIGKILL, for example by the out-of-memory killer)' if signal_number == '9' else ''}."
            )
        return f"The job's process exited unexpectedly (status {killed.group(1)})."
    lines = [line.strip() for line in exc_string.strip().splitlines() if line.strip()]
    return lines[-1][:MAX_ERROR_LENGTH]
