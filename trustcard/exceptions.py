"""The one exception hierarchy of the service.

Each error the API can answer with carries its HTTP status, a machine-readable code, what
it means (the class docstring's first paragraph) and the model of the details its answer
carries besides `error` and `message` (`Details`). The HTTP layer turns any of them into
the same JSON shape without knowing where it came from (`trustcard.api.errors`), and the
OpenAPI document's error answers are generated from these classes
(`trustcard.api.error_answers`), so what is documented is what is raised.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field

from trustcard.config.errors import ConfigError as ConfigError  # re-exported for entry points
from trustcard.status import TaskStatus


class TrustCardError(Exception):
    """The server hit an unexpected error; it has been logged.

    Base of every error a client may see."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    Details: ClassVar[type[BaseModel] | None] = None
    """The keys of its answer besides `error` and `message`; None when it has none."""
    other_codes: ClassVar[tuple[str, ...]] = ()
    """Codes that answers of the same meaning carry when the web framework gives them."""
    example: ClassVar[dict[str, Any]] = {}
    """Details of an example answer (the document's), when `Details` requires some."""
    retry_after_seconds: int | None = None
    """When set, the answer carries `Retry-After` with these seconds."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ParameterProblem(BaseModel):
    parameter: str = Field(description="The parameter's name.")
    problem: str = Field(description="What is wrong with it, e.g. 'is required'.")


class BadRequest(TrustCardError):
    """The request cannot be read: the body is not a JSON object, or a parameter is given twice."""

    status_code = 400
    code = "bad_request"

    class Details(BaseModel):
        parameter: str | None = Field(default=None, description="The parameter at fault, when there is one.")


class ValidationFailed(TrustCardError):
    """A parameter is missing, unknown, of the wrong type or out of range: one entry per bad parameter."""

    status_code = 422
    code = "validation_error"
    example = {"problems": [{"parameter": "x", "problem": "is required"}]}

    class Details(BaseModel):
        problems: list[ParameterProblem]


class Unauthorized(TrustCardError):
    """The bearer token is missing or wrong."""

    status_code = 401
    code = "unauthorized"


class NotFound(TrustCardError):
    """There is nothing at this URL."""

    status_code = 404
    code = "not_found"


class TaskNotFound(NotFound):
    """No such task: unknown, or its result has expired."""

    code = "task_not_found"


class UnknownJobType(NotFound):
    """No job type is catalogued at this path."""

    code = "unknown_job_type"


class TaskAlreadyEnded(TrustCardError):
    """The task has already ended; `status` says how."""

    status_code = 409
    code = "task_already_ended"
    example = {"status": "completed"}

    class Details(BaseModel):
        status: TaskStatus


class TaskNotRetryable(TrustCardError):
    """Only a failed or cancelled task can be retried."""

    status_code = 409
    code = "task_not_retryable"

    class Details(BaseModel):
        status: TaskStatus | None = Field(default=None, description="The task's status, when that is the reason.")


class IdempotencyKeyReused(TrustCardError):
    """The Idempotency-Key was used before for a different request."""

    status_code = 409
    code = "idempotency_key_reused"


class RateLimited(TrustCardError):
    """Too many submissions from this client: its bucket is empty."""

    status_code = 429
    code = "rate_limited"
    retry_after_seconds = 1
    """The least; each refusal carries its own, the time until enough tokens are back."""

    def __init__(self, message: str, retry_after_seconds: int, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after_seconds = retry_after_seconds


class PayloadTooLarge(TrustCardError):
    """The body is over the size limit.

    `payload_too_large` when its declared length is refused before reading;
    `request_entity_too_large` (Werkzeug's own 413) when a body sent without a length runs
    past the limit while it is read."""

    status_code = 413
    code = "payload_too_large"
    other_codes = ("request_entity_too_large",)

    class Details(BaseModel):
        limit: int | None = Field(default=None, description="The largest body accepted, in bytes.")


class ServiceUnavailable(TrustCardError):
    """A part the service needs (Redis, the database) does not answer."""

    status_code = 503
    code = "service_unavailable"
    retry_after_seconds = 5


class QueueUnavailable(ServiceUnavailable):
    """The task queue (Redis) is unreachable."""

    code = "queue_unavailable"


class QueueNotReplicated(ServiceUnavailable):
    """Fewer Redis replicas than REDIS_MIN_REPLICAS_ACK confirmed the submission in time, so it was
    not accepted: the service cancelled the task it had written (a batch's: each of `task_ids`). A
    failover may still bring it back uncancelled: after Retry-After, GET /tasks/{task_id}; submit
    again only when it answers 404 or `cancelled`."""

    code = "not_replicated"
    retry_after_seconds = 2
    example = {"task_id": "8478ac34-9f5a-436c-bf85-f768be21688b"}

    class Details(BaseModel):
        task_id: str | None = Field(
            default=None, description="The task written to the master and then cancelled; it may still run."
        )
        task_ids: list[str] | None = Field(
            default=None, description="A batch's tasks (POST /tasks/batch), each written and then cancelled."
        )
        analysis_id: str | None = Field(
            default=None, description="An analysis (POST /analyses, or its retry) whose first stage's job was "
            "written and then cancelled; the analysis reads failed and never runs."
        )


class QueueFull(ServiceUnavailable):
    """The queue holds as many tasks as it may: MAX_QUEUE_DEPTH waiting."""

    code = "queue_full"
    retry_after_seconds = 30


class DatabaseUnavailable(ServiceUnavailable):
    """The database does not answer."""

    code = "database_unavailable"


class AnalysisNotFound(NotFound):
    """No such analysis."""

    code = "analysis_not_found"


class AnalysisAlreadyEnded(TrustCardError):
    """The analysis has already ended; `status` says how."""

    status_code = 409
    code = "analysis_already_ended"
    example = {"status": "completed"}

    class Details(BaseModel):
        status: str = Field(description="completed, failed or cancelled.")


class AnalysisNotRetryable(TrustCardError):
    """Only a failed or cancelled analysis can be retried, and only while no other analysis of its post is under way."""

    status_code = 409
    code = "analysis_not_retryable"

    class Details(BaseModel):
        status: str | None = Field(default=None, description="The analysis's status, when that is the reason.")
