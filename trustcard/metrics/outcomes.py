"""What is counted: how a task ended, how a submission was answered, how long a task ran.

Label values are bounded on purpose: a task's type is a catalogue name or `unknown` (a job
pushed into Redis by hand names any function it likes), so a scraper never sees a new
time series per job.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING

from trustcard.catalogue import BY_FUNCTION, BY_NAME

if TYPE_CHECKING:
    from rq.job import Job

UNKNOWN_TYPE = "unknown"
"""The `type` of a job that names no catalogued job type (or cannot be read)."""

DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)
"""Upper bounds, in seconds, of the run-time histogram (and +Inf): an `add` takes
milliseconds, the analysis minutes, the hard limit defaults to 300 s."""


class TaskOutcome(str, Enum):
    """How a task ended: the `outcome` of `trustcard_tasks_ended_total`."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SubmissionOutcome(str, Enum):
    """How a submission was answered: the `outcome` of `trustcard_submissions_total`."""

    ACCEPTED = "accepted"
    RATE_LIMITED = "rate_limited"
    QUEUE_FULL = "queue_full"
    NOT_REPLICATED = "not_replicated"
    UNAVAILABLE = "unavailable"
    INVALID = "invalid"


def submission_outcome(status_code: int, error_code: str | None) -> SubmissionOutcome | None:
    """The outcome of a submission from its answer (None: not an answer we count).

    202 accepted (an idempotent replay too), 429 rate limited, 503 `queue_full`, 503
    `not_replicated` (written to the Redis master, withdrawn as too few replicas confirmed it)
    or any other 5xx unavailable, any other 4xx invalid (bad parameters, unknown type, no key, ...).
    """
    if status_code == 202:
        return SubmissionOutcome.ACCEPTED
    if status_code == 429:
        return SubmissionOutcome.RATE_LIMITED
    if status_code == 503 and error_code == "queue_full":
        return SubmissionOutcome.QUEUE_FULL
    if status_code == 503 and error_code == "not_replicated":
        return SubmissionOutcome.NOT_REPLICATED
    if 500 <= status_code < 600:
        return SubmissionOutcome.UNAVAILABLE
    if 400 <= status_code < 500:
        return SubmissionOutcome.INVALID
    return None


def job_type_name(job: Job) -> str:
    """The catalogue name of `job`'s type: its meta's `job_type`, else the type whose function
    it names, else `unknown`. Never raises: an unreadable job is `unknown`."""
    try:
        name = (job.meta or {}).get("job_type")
        if isinstance(name, str) and name in BY_NAME:
            return name
        job_type = BY_FUNCTION.get(job.func_name or "")
    except Exception:  # noqa: BLE001 - a job not stored as JSON cannot be read at all
        return UNKNOWN_TYPE
    return job_type.name if job_type is not None else UNKNOWN_TYPE


def run_seconds(started_at: datetime | None, ended_at: datetime | None) -> float | None:
    """How long a task ran, or None when it never started (or its end time is unknown)."""
    if started_at is None or ended_at is None:
        return None
    return max(0.0, (ended_at - started_at).total_seconds())
