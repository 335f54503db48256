"""What the API says about one task (`TaskView`), and how it is built from RQ's job data.

`TaskView` is the one definition of the task answer: its fields, their order, their
types and what each means. The HTTP layer's response model (`trustcard.api.schemas.Task`)
is generated from these fields, so the document cannot drift from the answers. Where the
API promises more than the Python type says (a status is one of five names, progress has
a percent and a stage), the field is marked `Documented(<the promised type>)`.

Pure: no Redis calls here. The task service reads the job (`StoredTask`) and calls
`build_view`; it settles an abandoned job first.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler
from pydantic_core import CoreSchema
from rq.exceptions import DeserializationError
from rq.job import Job
from rq.results import Result

from trustcard import failures
from trustcard.status import TaskStatus, summarise_failure, task_status

CANCELLED_ERROR = failures.CANCELLED_ON_REQUEST


@dataclass(frozen=True)
class Documented:
    """Field marker: validate and document this field as `type`, which its values always
    fit (a `str` that is a `TaskStatus` value, a `dict` shaped like `Progress`)."""

    type: Any

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return handler.generate_schema(self.type)


class Progress(BaseModel):
    """What a running job last reported about itself (`workers.progress`)."""

    model_config = ConfigDict(extra="allow")

    percent: int = Field(description="How far the job is, 0 to 100.")
    stage: str = Field(description="The stage it is in, e.g. 'Running AI detection...'.")


class Callback(BaseModel):
    """The webhook of a task submitted with `Callback-URL` (`trustcard.callbacks`)."""

    model_config = ConfigDict(extra="allow")

    url: str = Field(description="Where the task's final view is POSTed, signed (TrustCard-Signature).")
    status: Literal["pending", "retrying", "delivered", "failed"] = Field(
        description="pending until the task ends and the first attempt is made; retrying after a failed "
        "attempt (retried with back-off: first within 5 s, for about a day); delivered once the receiver "
        "answered 2xx; failed when every attempt failed."
    )
    attempts: int = Field(description="Delivery attempts made so far.")
    last_error: str | None = Field(description="Why the last attempt failed (one line), or null.")


@dataclass(frozen=True)
class TaskView:
    """One task as the API reports it."""

    task_id: Annotated[str, Field(description="The task's id, as given by the submit answer.")]
    name: Annotated[
        str | None, Field(description="The job type, e.g. 'test.add'; null for a job not submitted by us.")
    ]
    queue: Annotated[str, Field(description="The queue the task waits or runs on.")]
    status: Annotated[
        str,
        Documented(TaskStatus),
        Field(description="pending (queued, deferred or scheduled), started, completed, failed or cancelled."),
    ]
    result: Annotated[Any, Field(description="The job's result once completed (any JSON value), else null.")]
    error: Annotated[
        str | None,
        Field(description="A one-line reason once failed or cancelled (never a traceback), else null."),
    ]
    progress: Annotated[
        dict[str, Any] | None,
        Documented(Progress | None),
        Field(description="The job's last progress report, or null."),
    ]
    worker: Annotated[str | None, Field(description="The name of the worker that runs or ran it, or null.")]
    submitted_by: Annotated[
        str | None,
        Field(description="Who submitted it: the name of the client's API key (API_KEYS), else the client's address."),
    ]
    callback: Annotated[
        dict[str, Any] | None,
        Documented(Callback | None),
        Field(description="Its webhook, when it was submitted with a Callback-URL header; else null."),
    ]
    submitted_at: Annotated[str | None, Field(description="When it was submitted, ISO 8601 in UTC ('...Z').")]
    started_at: Annotated[str | None, Field(description="When a worker started it, ISO 8601 in UTC, or null.")]
    ended_at: Annotated[str | None, Field(description="When it ended, ISO 8601 in UTC, or null.")]

    def to_dict(self) -> dict[str, Any]:
        """The answer's JSON object. Shallow: its values go straight to the JSON encoder, so
        `dataclasses.asdict`'s deep copy of each (a tenth of a status read's CPU) buys nothing."""
        return {name: getattr(self, name) for name in TASK_FIELDS}


TASK_FIELDS = tuple(field.name for field in fields(TaskView))
"""The view's fields, in the answer's order."""


@dataclass(frozen=True)
class StoredTask:
    """One task as read from Redis in a single round trip: the job, our cancel flag, its
    latest result record (None until it has run) and its callback state (None without one)."""

    job: Job
    cancel_requested: bool
    latest: Result | None
    callback: dict[str, Any] | None = None
    worker_alive: bool | None = None
    """For a started task, whether its worker's key existed at the read (None: not known)."""


def iso(moment: datetime | None) -> str | None:
    """A moment as ISO 8601 in UTC with a 'Z' (RQ stores naive UTC datetimes)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


def job_meta(job: Job) -> dict[str, Any]:
    """The job's meta, or nothing when it cannot be read (a job not written by us)."""
    try:
        return job.meta or {}
    except DeserializationError:
        return {}


def build_view(stored: StoredTask) -> TaskView:
    """The view of a task read from Redis: status, result or error, and our meta."""
    job, latest = stored.job, stored.latest
    status = task_status(job.get_status(refresh=False), stored.cancel_requested)
    result: Any = None
    error: str | None = None
    if status is TaskStatus.COMPLETED:
        result = latest.return_value if latest is not None and latest.type == Result.Type.SUCCESSFUL else None
    elif status is TaskStatus.FAILED:
        error = summarise_failure(latest.exc_string if latest else None)
    elif status is TaskStatus.CANCELLED:
        error = CANCELLED_ERROR
    meta = job_meta(job)
    return TaskView(
        task_id=job.id,
        name=meta.get("job_type"),
        queue=job.origin,
        status=status.value,
        result=result,
        error=error,
        progress=meta.get("progress"),
        worker=job.worker_name,
        submitted_by=meta.get("submitted_by"),
        callback=stored.callback,
        submitted_at=iso(job.created_at),
        started_at=iso(job.started_at),
        ended_at=iso(job.ended_at),
    )


def pending_view(task_id: str, name: str, queue: str) -> TaskView:
    """A task known to be submitted but not readable yet (its first request is still
    enqueuing it): pending, nothing else known."""
    return TaskView(task_id, name, queue, TaskStatus.PENDING.value, None, None, None, None, None, None, None, None, None)
