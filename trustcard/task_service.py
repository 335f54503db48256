"""The task service: submit, read, cancel and list tasks, as plain data.

This is the only module that handles RQ jobs on the web side. It validates
parameters against the catalogue, enqueues by dotted path with the JSON serializer,
and turns RQ's objects into `TaskView`s. Redis being unreachable becomes
`QueueUnavailable`, so callers answer 503 instead of hanging or crashing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, ParamSpec, TypeVar

from pydantic import ValidationError
from redis import Redis
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import DeserializationError, InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus, Retry
from rq.registry import CanceledJobRegistry, FailedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.worker import Worker

from trustcard import failures, logs, rq_seams
from trustcard.callback_urls import CALLBACK_HEADER, CallbackURLRefused, check_callback_url
from trustcard.callbacks import CALLBACK_FIELD, CALLBACK_META_KEY, CallbackState, read_state
from trustcard.catalogue import BY_NAME, QUEUE_NAMES, JobType
from trustcard.config import Settings
from trustcard.connections import REDIS_DOWN_ERRORS, REDIS_REFUSING_WRITES
from trustcard.exceptions import (
    IdempotencyKeyReused,
    QueueFull,
    QueueUnavailable,
    TaskAlreadyEnded,
    TaskNotFound,
    TaskNotRetryable,
    UnknownJobType,
    ValidationFailed,
)
from trustcard.metrics.outcomes import SubmissionOutcome
from trustcard.metrics.store import SUBMISSIONS_KEY
from trustcard.metrics.ends import cancel_waiting, count_abandoned, count_if_abandoned
from trustcard.status import CANCEL_FIELD, TaskStatus, summarise_failure, task_status
from trustcard.task_events import progress_log

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

TASK_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
IDEMPOTENCY_PREFIX = "trustcard:idempotency:"
CANCEL_SETTLE_SECONDS = 2.0
"""How long DELETE waits for a running job's worker to confirm the stop."""


@dataclass(frozen=True)
class TaskView:
    """What the API says about one task."""

    task_id: str
    name: str | None
    queue: str
    status: str
    result: Any
    error: str | None
    progress: dict[str, Any] | None
    worker: str | None
    submitted_by: str | None
    callback: dict[str, Any] | None
    submitted_at: str | None
    started_at: str | None
    ended_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StoredTask:
    """One task as read from Redis in a single round trip: the job, our cancel flag, its
    latest result record (None until it has run) and its callback state (None without one)."""

    job: Job
    cancel_requested: bool
    latest: Result | None
    callback: dict[str, Any] | None = None


@dataclass(frozen=True)
class Submission:
    """A submitted task, and whether it is an earlier one returned for the same Idempotency-Key."""

    task: TaskView
    replayed: bool


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


def redis_required(method: Callable[P, R]) -> Callable[P, R]:
    """Turn "Redis does not answer" and "Redis takes no new data" into `QueueUnavailable` (HTTP 503)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except REDIS_DOWN_ERRORS as error:
            log.warning("redis unreachable during %s: %s", method.__name__, error)
            raise QueueUnavailable("The task queue (Redis) is unreachable; try again shortly.") from None
        except REDIS_REFUSING_WRITES as error:
            log.error("redis refused a write during %s: %s", method.__name__, error)
            raise QueueUnavailable(
                "The task queue (Redis) is refusing new data (out of memory or read-only); nothing was changed."
            ) from None

    return wrapper


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


class TaskService:
    """Submit, read, cancel and list tasks on one Redis connection."""

    def __init__(self, connection: Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings
        self._queues: dict[str, Queue] = {}

    def _queue(self, name: str) -> Queue:
        """One `Queue` per name for the service's life: it caches Redis's version, which RQ
        would otherwise ask for again (an INFO round trip) on every new `Queue`."""
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = Queue(name, connection=self.connection, serializer=JSONSerializer)
        return queue

    @redis_required
    def submit(
        self,
        job_name: str,
        raw_params: Mapping[str, Any],
        idempotency_key: str | None = None,
        *,
        submitted_by: str | None = None,
        request_id: str | None = None,
        callback_url: str | None = None,
    ) -> Submission:
        """Validate and enqueue; the view is the task as stored in Redis.

        With an `idempotency_key`, the same key within the result lifetime answers with the
        first task instead of enqueuing another (and refuses other parameters under it).
        `submitted_by` and `request_id` are kept on the job, so that the worker's log lines
        name the same request as the router's and the web's. A `callback_url` is checked
        (`trustcard.callback_urls`) before anything is queued; the task's end then POSTs its
        final view there.
        """
        job_type = BY_NAME.get(job_name)
        if job_type is None or job_type.internal:
            raise UnknownJobType(f"There is no job type named {job_name!r}.")
        params = validate_params(job_type, raw_params)
        if callback_url is not None:
            check_callback(callback_url, self.settings)
        queue = self._queue(job_type.queue)
        if self.settings.max_queue_depth and queue.count >= self.settings.max_queue_depth:
            raise QueueFull(f"The {job_type.queue} queue is full ({self.settings.max_queue_depth} waiting tasks).")
        job_id = str(uuid.uuid4())
        if idempotency_key is not None:
            earlier = self._claim_idempotency_key(idempotency_key, job_id, job_type, params, callback_url)
            if earlier is not None:
                return Submission(self._view_or_placeholder(earlier, job_type), replayed=True)
        soft_timeout = job_type.soft_timeout or self.settings.job_soft_timeout
        hard_timeout = max(job_type.hard_timeout or self.settings.job_timeout, soft_timeout)
        retry = Retry(max=job_type.retries, interval=list(job_type.retry_backoff) or 0) if job_type.retries else None
        try:
            # One MULTI/EXEC for the queue registration, the job and its push (RQ sends two).
            with self.connection.pipeline() as pipeline:
                job = queue.enqueue_call(
                    job_type.function,
                    kwargs=params,
                    timeout=soft_timeout,
                    result_ttl=job_type.result_ttl or self.settings.result_ttl,
                    failure_ttl=self.settings.failure_ttl,
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
                # Counted for /metrics in the same transaction: no round trip of its own, and a
                # broken counter (its error comes back last) cannot undo or fail the submission.
                pipeline.hincrby(SUBMISSIONS_KEY, SubmissionOutcome.ACCEPTED.value, 1)
                for reply in pipeline.execute(raise_on_error=False)[:-1]:
                    if isinstance(reply, Exception):
                        raise reply
        except BaseException:
            if idempotency_key is not None:
                self._release_idempotency_key(idempotency_key, job_id)
            raise
        with logs.bound(task_id=job.id):
            log.info("task %s received: %s %s", job.id, job_type.name, params)
        # Just enqueued under a new id: nothing to read back, no cancel flag, no result yet.
        stored = StoredTask(job, cancel_requested=False, latest=None, callback=callback and callback.to_dict())
        return Submission(self._view(stored), replayed=False)

    def _idempotency_redis_key(self, key: str) -> str:
        return IDEMPOTENCY_PREFIX + hashlib.sha256(key.encode()).hexdigest()

    def _claim_idempotency_key(
        self, key: str, job_id: str, job_type: JobType, params: dict[str, Any], callback_url: str | None = None
    ) -> str | None:
        """Claim `key` for `job_id`; return the earlier task's id when it is taken."""
        request = [job_type.name, params] + ([callback_url] if callback_url is not None else [])
        fingerprint = json.dumps(request, sort_keys=True)
        record = json.dumps({"task_id": job_id, "request": fingerprint})
        redis_key = self._idempotency_redis_key(key)
        ttl = job_type.result_ttl or self.settings.result_ttl
        if self.connection.set(redis_key, record, nx=True, ex=ttl):
            return None
        stored = self.connection.get(redis_key)
        if stored is None:  # expired between the two calls: claim it again
            return self._claim_idempotency_key(key, job_id, job_type, params, callback_url)
        earlier = json.loads(stored)
        if earlier["request"] != fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was already used for a different request; use a new key for new work."
            )
        return str(earlier["task_id"])

    def _release_idempotency_key(self, key: str, job_id: str) -> None:
        redis_key = self._idempotency_redis_key(key)
        stored = self.connection.get(redis_key)
        if stored is not None and json.loads(stored)["task_id"] == job_id:
            self.connection.delete(redis_key)

    def _view_or_placeholder(self, task_id: str, job_type: JobType) -> TaskView:
        """The earlier task, or (while its first request is still enqueuing it) a pending view."""
        try:
            return self._view(self._fetch(task_id))
        except TaskNotFound:
            return TaskView(task_id, job_type.name, job_type.queue, TaskStatus.PENDING.value,
                            None, None, None, None, None, None, None, None, None)

    @redis_required
    def retry(self, task_id: str) -> TaskView:
        """Put a failed or cancelled task back on its queue, under the same id."""
        stored = self._fetch(task_id)
        job = stored.job
        current = self._view(stored)
        if current.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            raise TaskNotRetryable(
                f"Task {task_id} is {current.status}; only failed or cancelled tasks can be retried.",
                status=current.status,
            )
        self.connection.hdel(job.key, CANCEL_FIELD)
        rq_status = job.get_status(refresh=True)
        registry_class = CanceledJobRegistry if rq_status == JobStatus.CANCELED else FailedJobRegistry
        registry = registry_class(job.origin, connection=self.connection, serializer=JSONSerializer)
        try:
            registry.requeue(job)
        except InvalidJobOperation:
            raise TaskNotRetryable(f"Task {task_id} is not in a state that can be retried now.") from None
        log.info("task %s requeued on request (was %s)", task_id, current.status)
        return self._view(self._read(job))

    @redis_required
    def get(self, task_id: str) -> TaskView:
        return self._view(self._fetch(task_id))

    @redis_required
    def get_with_progress_log(self, task_id: str) -> tuple[TaskView, list[dict[str, Any]]]:
        """The task's view and the progress history its job kept (for event streams), from
        one read."""
        stored = self._fetch(task_id)
        view = self._view(stored)
        try:
            meta = stored.job.meta or {}
        except DeserializationError:
            meta = {}
        return view, progress_log(meta)

    @redis_required
    def cancel(self, task_id: str) -> TaskView:
        """A waiting task is taken off its queue; a running one is stopped by its worker."""
        stored = self._fetch(task_id)
        job = stored.job
        current = self._view(stored)
        if TaskStatus(current.status).has_ended:
            raise TaskAlreadyEnded(
                f"Task {task_id} has already ended as {current.status}; there is nothing to cancel.",
                status=current.status,
            )
        self.connection.hset(job.key, CANCEL_FIELD, "1")
        rq_status = job.get_status(refresh=True)
        if rq_status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.CREATED):
            try:
                if not cancel_waiting(job):  # counted for /metrics once, in the same transaction
                    rq_status = job.get_status(refresh=True)  # a worker started it meanwhile
            except InvalidJobOperation:
                pass  # already cancelled by someone else
        if rq_status == JobStatus.STARTED:
            self._stop_running(job)
        log.info("task %s cancelled (was %s)", task_id, rq_status)
        return self._view(self._read(job))

    @redis_required
    def running(self) -> list[TaskView]:
        """The tasks some worker is running now, on every catalogued queue."""
        views = []
        for queue_name in QUEUE_NAMES:
            registry = StartedJobRegistry(queue_name, connection=self.connection, serializer=JSONSerializer)
            for job_id in registry.get_job_ids():
                try:
                    views.append(self._view(self._fetch(job_id)))
                except TaskNotFound:
                    continue  # ended and expired between the two reads
        return [view for view in views if view.status == TaskStatus.STARTED]

    @redis_required
    def queue_depths(self) -> dict[str, int]:
        return {name: self._queue(name).count for name in QUEUE_NAMES}

    @redis_required
    def worker_count(self) -> int:
        return Worker.count(connection=self.connection)

    def _fetch(self, task_id: str) -> StoredTask:
        if not TASK_ID_PATTERN.match(task_id):
            raise TaskNotFound(f"No task has the id {task_id!r}.")
        job = Job(task_id, connection=self.connection, serializer=JSONSerializer)
        try:
            return self._read(job)
        except NoSuchJobError:
            raise TaskNotFound(f"No task has the id {task_id!r} (unknown, or its result has expired).") from None

    def _read(self, job: Job) -> StoredTask:
        """The job's hash and its latest result in one round trip (the API's hot path:
        clients poll it); the cancel flag is a field of that same hash."""
        with self.connection.pipeline(transaction=False) as pipeline:
            pipeline.hgetall(job.key)
            pipeline.xrevrange(Result.get_key(job.id), "+", "-", count=1)
            raw, results = pipeline.execute()
        if not raw:
            raise NoSuchJobError(f"No such job: {job.key}")
        job.restore(raw)
        latest = None
        if results:
            result_id, payload = results[0]
            latest = Result.restore(
                job.id, result_id.decode(), payload, connection=self.connection, serializer=JSONSerializer
            )
        return StoredTask(job, cancel_requested=CANCEL_FIELD.encode() in raw, latest=latest, callback=read_state(raw))

    def _stop_running(self, job: Job) -> None:
        """Ask the job's worker to stop it, and give it a moment to confirm."""
        try:
            send_stop_job_command(self.connection, job.id, serializer=JSONSerializer)
        except InvalidJobOperation:
            pass  # ended between our reads; the cancel flag still marks it
        self._wait_until_ended(job)

    def _wait_until_ended(self, job: Job) -> None:
        deadline = time.monotonic() + CANCEL_SETTLE_SECONDS
        while time.monotonic() < deadline:
            if job.get_status(refresh=True) != JobStatus.STARTED:
                return
            time.sleep(0.05)

    def _settle_if_abandoned(self, job: Job) -> bool:
        """A started job whose worker no longer exists will never finish: let RQ's own
        abandoned-job handling fail it (or retry it, by its policy) now, not at the next
        maintenance pass minutes later. The worker's key lives only while it heartbeats."""
        if job.get_status(refresh=False) != JobStatus.STARTED or not job.worker_name:
            return False
        if self.connection.exists(Worker.redis_worker_namespace_prefix + job.worker_name):
            return False
        registry = StartedJobRegistry(job.origin, connection=self.connection, serializer=JSONSerializer)
        prefix = f"{job.id}:".encode()
        entries = [entry for entry in self.connection.zrange(registry.key, 0, -1) if entry.startswith(prefix)]
        if entries:
            self.connection.zadd(registry.key, {entry: 0 for entry in entries}, xx=True)
            # Only the entries just marked, nobody else's; the handler counts it for /metrics.
            registry.cleanup(timestamp=1, exception_handlers=[count_if_abandoned])
        else:  # no registry entry left to settle through
            with self.connection.pipeline() as pipeline:
                rq_seams.record_job_failure(job, failures.ABANDONED_BY_STATUS_CHECK.render(), pipeline)
                pipeline.execute()
            count_abandoned(job, retried=False)
        log.warning("task %s abandoned: its worker %s is gone", job.id, job.worker_name)
        return True

    def _view(self, stored: StoredTask) -> TaskView:
        if self._settle_if_abandoned(stored.job):
            stored = self._read(stored.job)
        job, latest = stored.job, stored.latest
        status = task_status(job.get_status(refresh=False), stored.cancel_requested)
        result: Any = None
        error: str | None = None
        if status is TaskStatus.COMPLETED:
            result = latest.return_value if latest is not None and latest.type == Result.Type.SUCCESSFUL else None
        elif status is TaskStatus.FAILED:
            error = summarise_failure(latest.exc_string if latest else None)
        elif status is TaskStatus.CANCELLED:
            error = failures.CANCELLED_ON_REQUEST
        try:
            meta = job.meta or {}
        except DeserializationError:
            meta = {}
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
            submitted_at=_iso(job.created_at),
            started_at=_iso(job.started_at),
            ended_at=_iso(job.ended_at),
        )
