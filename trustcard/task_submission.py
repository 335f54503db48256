"""Submitting a task: its parameters checked, its Idempotency-Key claimed, its job enqueued.

The task service (`trustcard.task_service.TaskService.submit`) calls these in order; each
refusal is an exception of `trustcard.exceptions`, raised before anything is queued.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from redis import Redis
from redis.client import Pipeline
from rq import Queue
from rq.job import Job, Retry

from trustcard.admission import QUEUE_FULL, Admission, Admitter
from trustcard.callback_urls import CALLBACK_HEADER, CallbackURLRefused, check_callback_url
from trustcard.callbacks import CALLBACK_FIELD, CALLBACK_META_KEY, CallbackState
from trustcard.catalogue import JobType
from trustcard.command_recording import CommandRecorder
from trustcard.config import Settings
from trustcard.exceptions import IdempotencyKeyReused, QueueFull, ValidationFailed
from trustcard.metrics.outcomes import SubmissionOutcome
from trustcard.metrics.store import SUBMISSIONS_KEY
from trustcard.task_view import TaskView

IDEMPOTENCY_PREFIX = "trustcard:idempotency:"


@dataclass(frozen=True)
class Submission:
    """A submitted task, and whether it is an earlier one returned for the same Idempotency-Key."""

    task: TaskView
    replayed: bool


def validate_params(job_type: JobType, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check raw parameters against the job type's model; name every bad parameter."""
    try:
        model = job_type.params.model_validate(dict(raw))
    except ValidationError as error:
        problems = []
        for item in error.errors(include_url=False):
            parameter = ".".join(str(part) for part in item["loc"]) or "body"
            problem = {"missing": "is required", "extra_forbidden": "is not a parameter of this task"}.get(
                item["type"], item["msg"].removeprefix("Value error, ")
            )
            problems.append({"parameter": parameter, "problem": problem})
        message = "; ".join(f"{p['parameter']} {p['problem']}" for p in problems)
        raise ValidationFailed(f"Invalid parameters for {job_type.name}: {message}.", problems=problems) from None
    return model.model_dump()


def check_callback(url: str, settings: Settings) -> None:
    """Refuse (422, naming the header) a callback that cannot be signed or may not be called."""
    if not settings.webhook_secret:
        problem = "needs WEBHOOK_SECRET to be set on the server: deliveries are always signed"
    else:
        try:
            check_callback_url(url, allow_private=settings.webhook_allow_private)
            return
        except CallbackURLRefused as refused:
            problem = f"is refused: {refused}"
    raise ValidationFailed(
        f"{CALLBACK_HEADER} {problem}.", problems=[{"parameter": CALLBACK_HEADER, "problem": problem}]
    )


class IdempotencyKeys:
    """Idempotency-Keys in Redis: each names the first task submitted under it, and the
    request it was submitted with, for the result lifetime."""

    def __init__(self, connection: Redis) -> None:
        self.connection = connection

    @staticmethod
    def redis_key(key: str) -> str:
        return IDEMPOTENCY_PREFIX + hashlib.sha256(key.encode()).hexdigest()

    def claim(
        self, key: str, job_id: str, job_type: JobType, params: dict[str, Any], ttl: int, callback_url: str | None
    ) -> str | None:
        """Claim `key` for `job_id`; return the earlier task's id when it is taken."""
        request = [job_type.name, params] + ([callback_url] if callback_url is not None else [])
        fingerprint = json.dumps(request, sort_keys=True)
        record = json.dumps({"task_id": job_id, "request": fingerprint})
        redis_key = self.redis_key(key)
        if self.connection.set(redis_key, record, nx=True, ex=ttl):
            return None
        stored = self.connection.get(redis_key)
        if stored is None:  # expired between the two calls: claim it again
            return self.claim(key, job_id, job_type, params, ttl, callback_url)
        earlier = json.loads(stored)
        if earlier["request"] != fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was already used for a different request; use a new key for new work."
            )
        return str(earlier["task_id"])

    def release(self, key: str, job_id: str) -> None:
        """Give `key` up again when `job_id`, which claimed it, could not be enqueued."""
        redis_key = self.redis_key(key)
        stored = self.connection.get(redis_key)
        if stored is not None and json.loads(stored)["task_id"] == job_id:
            self.connection.delete(redis_key)


def enqueue(
    admitter: Admitter,
    queue: Queue,
    job_type: JobType,
    params: dict[str, Any],
    job_id: str,
    settings: Settings,
    *,
    admission: Admission | None,
    submitted_by: str | None,
    request_id: str | None,
    callback_url: str | None,
    counted: bool = True,
) -> tuple[Job, dict[str, Any] | None]:
    """Enqueue the job under its limits and retry policy, in the one call that also takes
    the client's token and checks the queue's depth (`trustcard.admission`); the job and
    its callback state (None without a callback). Counted accepted for /metrics in the same
    call, unless not `counted`: when the answer waits for replicas (REDIS_MIN_REPLICAS_ACK),
    it may yet be refused. Refusals raise `RateLimited` (429) or `QueueFull` (503)."""
    recorder = CommandRecorder()
    job, callback = stage(
        recorder, queue, job_type, params, job_id, settings,
        submitted_by=submitted_by, request_id=request_id, callback_url=callback_url,
    )
    if admitter.admit(admission, queue.key, recorder, counted=counted) == QUEUE_FULL:
        raise QueueFull(f"The {job_type.queue} queue is full ({settings.max_queue_depth} waiting tasks).")
    return job, callback and callback.to_dict()


def stage(
    pipeline: Pipeline | CommandRecorder,
    queue: Queue,
    job_type: JobType,
    params: dict[str, Any],
    job_id: str,
    settings: Settings,
    *,
    submitted_by: str | None,
    request_id: str | None,
    callback_url: str | None,
) -> tuple[Job, CallbackState | None]:
    """Add one job's enqueue, under its limits and retry policy, to `pipeline` (sent by the
    caller): one job here, or every job of a batch in one transaction."""
    soft_timeout = job_type.soft_timeout or settings.job_soft_timeout
    hard_timeout = max(job_type.hard_timeout or settings.job_timeout, soft_timeout)
    retry = Retry(max=job_type.retries, interval=list(job_type.retry_backoff) or 0) if job_type.retries else None
    job = queue.enqueue_call(
        job_type.function,
        kwargs=params,
        timeout=soft_timeout,
        result_ttl=job_type.result_ttl or settings.result_ttl,
        failure_ttl=settings.failure_ttl,
        meta={
            "job_type": job_type.name,
            "hard_timeout": hard_timeout,
            "submitted_by": submitted_by,
            "request_id": request_id,
            **({CALLBACK_META_KEY: callback_url} if callback_url is not None else {}),
        },
        retry=retry,
        job_id=job_id,
        pipeline=pipeline,
    )
    callback = None
    if callback_url is not None:
        callback = CallbackState(callback_url)
        pipeline.hset(job.key, CALLBACK_FIELD, callback.to_json())
    return job, callback


REPLICA_ACK_TIMEOUT_MS = 500
"""How long a submission waits for REDIS_MIN_REPLICAS_ACK replicas: below the web's socket
timeout, and far above a healthy replica's acknowledgement (a millisecond or two)."""


def replicas_holding(connection: Redis, wanted: int, timeout_ms: int = REPLICA_ACK_TIMEOUT_MS) -> int:
    """How many replicas hold every write made on the master so far (Redis `WAIT`), waiting
    up to `timeout_ms` for `wanted` of them.

    `WAIT` counts the writes of its own connection, and a pooled client may send it on
    another connection than the enqueue's. So it follows a write of its own on the same
    connection (a counter incremented by 0): Redis replicates in order, so a replica that
    has that write has the enqueue, which came before it."""
    with connection.pipeline(transaction=False) as pipeline:
        pipeline.hincrby(SUBMISSIONS_KEY, SubmissionOutcome.ACCEPTED.value, 0)
        pipeline.wait(wanted, timeout_ms)
        _, acknowledged = pipeline.execute()
    return int(acknowledged)
