"""Response models of the HTTP API, in pydantic, so the OpenAPI document's response
schemas come from models rather than hand-written JSON.

The views build plain dicts (from `trustcard.task_service.TaskView` and friends); these models
describe those dicts. A unit test keeps them honest: the task model has exactly the
fields of `TaskView`, and real answers validate against the models. The models allow
extra keys, as a client should: adding a key to an answer is not a breaking change.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from trustcard.status import TaskStatus


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


class Task(BaseModel):
    """One task as the API reports it: the fields of `trustcard.task_service.TaskView`."""

    model_config = ConfigDict(extra="allow")

    task_id: str = Field(description="The task's id, as given by the submit answer.")
    name: str | None = Field(description="The job type, e.g. 'test.add'; null for a job not submitted by us.")
    queue: str = Field(description="The queue the task waits or runs on.")
    status: TaskStatus = Field(
        description="pending (queued, deferred or scheduled), started, completed, failed or cancelled."
    )
    result: Any = Field(description="The job's result once completed (any JSON value), else null.")
    error: str | None = Field(description="A one-line reason once failed or cancelled (never a traceback), else null.")
    progress: Progress | None = Field(description="The job's last progress report, or null.")
    worker: str | None = Field(description="The name of the worker that runs or ran it, or null.")
    submitted_by: str | None = Field(
        description="Who submitted it: the name of the client's API key (API_KEYS), else the client's address."
    )
    callback: Callback | None = Field(
        description="Its webhook, when it was submitted with a Callback-URL header; else null."
    )
    submitted_at: str | None = Field(description="When it was submitted, ISO 8601 in UTC ('...Z').")
    started_at: str | None = Field(description="When a worker started it, ISO 8601 in UTC, or null.")
    ended_at: str | None = Field(description="When it ended, ISO 8601 in UTC, or null.")


class SubmittedTask(Task):
    """The answer to a submission: the task as stored, with status `submitted`."""

    status: Literal["submitted"] = Field(  # type: ignore[assignment]
        description="Always 'submitted'; poll the task's URL (the Location header) for its progress."
    )


class CancelledTask(BaseModel):
    """The answer to DELETE: normally `cancelled`; `completed` when the task finished
    in the moment between the request and the stop."""

    model_config = ConfigDict(extra="allow")

    task_id: str
    status: TaskStatus
    error: str | None = Field(description="'Cancelled on request.' once cancelled.")


class RunningTasks(BaseModel):
    """The tasks some worker is running now, on every catalogued queue."""

    model_config = ConfigDict(extra="allow")

    tasks: list[Task]
    count: int = Field(ge=0, description="How many tasks are listed.")


class Health(BaseModel):
    """The health answer: 200 when every part answers, 503 naming the failing ones."""

    model_config = ConfigDict(extra="allow")

    status: Literal["healthy", "unhealthy"]
    database: Literal["connected", "unreachable"]
    redis: Literal["connected", "unreachable"]
    workers: int | None = Field(description="Workers registered in Redis; null when Redis is unreachable.")
    queues: dict[str, int] | None = Field(description="Jobs waiting on each queue; null when Redis is unreachable.")
    failing: list[Literal["redis", "database"]] | None = Field(
        default=None, description="The parts that do not answer; present only when unhealthy."
    )


class Error(BaseModel):
    """Every error answer: a machine-readable code, a human message, and details that
    depend on the error. Errors that carry details have a model of their own below."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="Machine-readable code, e.g. 'task_not_found'.")
    message: str = Field(description="One human-readable sentence.")


class ParameterProblem(BaseModel):
    parameter: str = Field(description="The parameter's name.")
    problem: str = Field(description="What is wrong with it, e.g. 'is required'.")


class ValidationFailedError(Error):
    """422: one entry per bad parameter."""

    error: Literal["validation_error"]  # type: ignore[assignment]
    problems: list[ParameterProblem]


class BadRequestError(Error):
    """400: the request cannot be read (body not JSON, a parameter given twice)."""

    error: Literal["bad_request"]  # type: ignore[assignment]
    parameter: str | None = Field(default=None, description="The parameter at fault, when there is one.")


class TaskAlreadyEndedError(Error):
    """409: the task has already ended; `status` says how."""

    error: Literal["task_already_ended"]  # type: ignore[assignment]
    status: TaskStatus


class TaskNotRetryableError(Error):
    """409 on retry: only failed or cancelled tasks go back on their queue."""

    error: Literal["task_not_retryable"]  # type: ignore[assignment]
    status: TaskStatus | None = Field(default=None, description="The task's status, when that is the reason.")


class PayloadTooLargeError(Error):
    """413: the body is over the size limit. `payload_too_large` when its declared length
    is refused before reading; `request_entity_too_large` when a body sent without a
    length runs past the limit while it is read."""

    error: Literal["payload_too_large", "request_entity_too_large"]  # type: ignore[assignment]
    limit: int | None = Field(default=None, description="The largest body accepted, in bytes.")


class RequestRefusedError(Error):
    """400, 414 or 431 from the web server itself, before the app reads the request: a
    malformed request line, HTTP version or header (400), a request line over the limit
    (414), too many or too large header fields (431)."""

    error: Literal["bad_request", "uri_too_long", "request_header_fields_too_large"]  # type: ignore[assignment]


RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    Task,
    SubmittedTask,
    CancelledTask,
    RunningTasks,
    Health,
    Error,
    ValidationFailedError,
    BadRequestError,
    TaskAlreadyEndedError,
    TaskNotRetryableError,
    PayloadTooLargeError,
    RequestRefusedError,
)
"""Every model the document's responses refer to."""
