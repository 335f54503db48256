"""The one exception hierarchy of the service.

Each error the API can answer with carries its HTTP status and a machine-readable
code, so the HTTP layer turns any of them into the same JSON shape without knowing
where it came from.
"""

from __future__ import annotations

from typing import Any


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one sentence naming it."""


class TrustCardError(Exception):
    """Base of every error a client may see."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(TrustCardError):
    status_code = 400
    code = "bad_request"


class ValidationFailed(TrustCardError):
    """A parameter is missing, of the wrong type or out of range."""

    status_code = 422
    code = "validation_error"


class Unauthorized(TrustCardError):
    status_code = 401
    code = "unauthorized"


class NotFound(TrustCardError):
    status_code = 404
    code = "not_found"


class TaskNotFound(NotFound):
    code = "task_not_found"


class UnknownJobType(NotFound):
    code = "unknown_job_type"


class TaskAlreadyEnded(TrustCardError):
    status_code = 409
    code = "task_already_ended"


class TaskNotRetryable(TrustCardError):
    status_code = 409
    code = "task_not_retryable"


class IdempotencyKeyReused(TrustCardError):
    status_code = 409
    code = "idempotency_key_reused"


class RateLimited(TrustCardError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after_seconds: int, **details: Any) -> None:
        super().__init__(message, **details)
        self.retry_after_seconds = retry_after_seconds


class PayloadTooLarge(TrustCardError):
    status_code = 413
    code = "payload_too_large"


class ServiceUnavailable(TrustCardError):
    """A part the service needs (Redis, the database) does not answer."""

    status_code = 503
    code = "service_unavailable"
    retry_after_seconds = 5


class QueueUnavailable(ServiceUnavailable):
    code = "queue_unavailable"


class QueueFull(ServiceUnavailable):
    code = "queue_full"
    retry_after_seconds = 30
