"""The task service: submit, read, cancel, retry and list tasks, as plain data.

This is the only module that handles RQ jobs on the web side. Submission's steps are in
`trustcard.task_submission`, the view of a task in `trustcard.task_view`; here they are
put together on one Redis connection. Redis being unreachable becomes `QueueUnavailable`,
so callers answer 503 instead of hanging or crashing.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

from redis import Redis
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import CanceledJobRegistry, FailedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer
from rq.worker import Worker

from trustcard import failures, job_results, logs, rq_seams
from trustcard.admission import Admission, Admitter
from trustcard.callbacks import read_state
from trustcard.catalogue import BY_NAME, QUEUE_NAMES, JobType
from trustcard.config import Settings
from trustcard.connections import REDIS_DOWN_ERRORS, REDIS_REFUSING_WRITES
from trustcard.exceptions import (
    QueueFull,
    QueueNotReplicated,
    QueueUnavailable,
    TaskAlreadyEnded,
    TaskNotFound,
    TaskNotRetryable,
    TrustCardError,
    UnknownJobType,
)
from trustcard.metrics.ends import cancel_waiting, count_abandoned, count_if_abandoned
from trustcard.metrics.outcomes import SubmissionOutcome
from trustcard.metrics.store import count_submission
from trustcard.settling import settling
from trustcard.status import CANCEL_FIELD, TaskStatus
from trustcard.task_batch import BatchIdempotencyKeys, BatchSubmission, BatchTask, check_queue_depths, enqueue_batch
from trustcard.task_events import progress_log
from trustcard.task_reading import read_task
from trustcard.task_submission import (
    IdempotencyKeys,
    Submission,
    check_callback,
    enqueue,
    replicas_holding,
    validate_params,
)
from trustcard.task_view import StoredTask, TaskView, build_view, job_meta, pending_view

__all__ = ["TASK_ID_PATTERN", "Submission", "TaskService", "TaskView", "queue_key", "redis_required"]

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

TASK_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CANCEL_SETTLE_SECONDS = 2.0
"""How long DELETE waits for a running job's worker to confirm the stop."""


def queue_key(queue_name: str) -> str:
    """The Redis list that holds a queue's waiting job ids (its length is the queue's depth)."""
    return Queue.redis_queue_namespace_prefix + queue_name


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


class TaskService:
    """Submit, read, cancel and list tasks on one Redis connection."""

    def __init__(self, connection: Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings
        self._queues: dict[str, Queue] = {}
        self._idempotency = IdempotencyKeys(connection)
        self._batch_idempotency = BatchIdempotencyKeys(connection)
        self._admitter = Admitter(connection, settings)

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
        admission: Admission | None = None,
        job_id: str | None = None,
    ) -> Submission:
        """Validate and enqueue; the view is the task as stored in Redis.

        With an `idempotency_key`, the same key within the result lifetime answers with the
        first task instead of enqueuing another (and refuses other parameters under it).
        `submitted_by` and `request_id` are kept on the job, so that the worker's log lines
        name the same request as the router's and the web's. A `callback_url` is checked
        (`trustcard.callback_urls`) before anything is queued; the task's end then POSTs its
        final view there. With an `admission`, the client's rate-limit token is taken in the
        enqueue's own call (`trustcard.admission`), which also checks `MAX_QUEUE_DEPTH`; the
        take's state is left on it for the answer's headers.
        `job_id` is the new task's id when the caller chose it (a fresh UUID: it waits on
        that id before the task exists); else one is made.
        """
        job_type = BY_NAME.get(job_name)
        if job_type is None or job_type.internal:
            raise UnknownJobType(f"There is no job type named {job_name!r}.")
        params = validate_params(job_type, raw_params)
        if callback_url is not None:
            check_callback(callback_url, self.settings)
        queue = self._queue(job_type.queue)
        job_id = job_id or str(uuid.uuid4())
        if idempotency_key is not None:
            ttl = job_type.result_ttl or self.settings.result_ttl
            earlier = self._idempotency.claim(idempotency_key, job_id, job_type, params, ttl, callback_url)
            if earlier is not None:
                try:
                    view = self._view(self._fetch(earlier))
                except TaskNotFound:  # its first request is still enqueuing it
                    view = pending_view(earlier, job_type.name, job_type.queue)
                return Submission(view, replayed=True)
        try:
            job, callback = enqueue(
                self._admitter, queue, job_type, params, job_id, self.settings, admission=admission,
                submitted_by=submitted_by, request_id=request_id, callback_url=callback_url,
                counted=not self.settings.redis_min_replicas_ack,
            )
            if self.settings.redis_min_replicas_ack:
                self._confirm_replicated([job_id])
        except BaseException:
            if idempotency_key is not None:
                self._release_key(idempotency_key, job_id)
            raise
        with logs.bound(task_id=job.id):
            log.info("task %s received: %s %s", job.id, job_type.name, params)
        # Just enqueued under a new id: nothing to read back, no cancel flag, no result yet.
        stored = StoredTask(job, cancel_requested=False, latest=None, callback=callback)
        return Submission(self._view(stored), replayed=False)

    def replication_shortfall(self, what: str) -> str | None:
        """None once `REDIS_MIN_REPLICAS_ACK` replicas hold every write the master took so far
        (so the jobs just enqueued, on any connection); else what they confirmed, for the
        refusal's message (`0 of 1`, `no answer` when the master was lost meanwhile)."""
        wanted = self.settings.redis_min_replicas_ack
        try:
            holding = replicas_holding(self.connection, wanted)
        except (*REDIS_DOWN_ERRORS, *REDIS_REFUSING_WRITES) as error:  # the master died after the enqueue
            log.warning("%s: replicas could not confirm it: %s", what, error)
            return "no answer"
        return None if holding >= wanted else f"{holding} of {wanted}"

    def withdraw(self, task_id: str) -> bool:
        """Cancel a task whose submission is being refused (best effort: the master may be
        gone). Its cancel is no end for /metrics, as its submission was never counted
        accepted; False when it could not be cancelled."""
        try:
            self.cancel(task_id, counted=False)
        except TrustCardError as error:  # unreachable, or a worker ended it already
            log.warning("task %s: not confirmed by replicas, and not cancelled: %s", task_id, error.message)
            return False
        return True

    def _confirm_replicated(self, job_ids: Sequence[str]) -> None:
        """Return once `REDIS_MIN_REPLICAS_ACK` replicas hold the tasks just enqueued (one, or a
        batch's), and count them accepted for /metrics only then; else withdraw them and
        refuse the submission, so that a 202 always means a failover cannot lose the tasks."""
        confirmed = self.replication_shortfall("tasks " + ", ".join(job_ids))
        if confirmed is None:
            count_submission(self.connection, SubmissionOutcome.ACCEPTED, len(job_ids))
            return
        failed_cancels = sum(not self.withdraw(job_id) for job_id in job_ids)
        if len(job_ids) == 1:
            [job_id] = job_ids
            outcome = "cancelling it failed too" if failed_cancels else "it was cancelled"
            raise QueueNotReplicated(
                f"Task {job_id} was written to the Redis master, but replicas did not confirm it in time "
                f"({confirmed}), so it was not accepted and {outcome}. A failover may still bring it back "
                f"uncancelled: GET /tasks/{job_id} after Retry-After, and submit again only when it answers 404 or "
                "cancelled.",
                task_id=job_id,
            )
        outcome = f"cancelling {failed_cancels} of them failed" if failed_cancels else "they were cancelled"
        raise QueueNotReplicated(
            f"The batch's {len(job_ids)} tasks were written to the Redis master, but replicas did not confirm them "
            f"in time ({confirmed}), so none was accepted and {outcome}. A failover may still bring them back "
            "uncancelled: GET each of task_ids after Retry-After, and submit again only those that answer 404 or "
            "cancelled.",
            task_ids=list(job_ids),
        )

    def _release_key(self, idempotency_key: str, job_id: str) -> None:
        """Give the key up after a failed submission; a Redis that is down keeps the real error visible."""
        try:
            self._idempotency.release(idempotency_key, job_id)
        except REDIS_DOWN_ERRORS as error:
            log.warning("Idempotency-Key of task %s not released: %s", job_id, error)

    @redis_required
    def submit_batch(
        self,
        tasks: Sequence[BatchTask],
        idempotency_key: str | None = None,
        *,
        submitted_by: str | None = None,
        request_id: str | None = None,
        callback_url: str | None = None,
    ) -> BatchSubmission:
        """Enqueue checked tasks (`trustcard.task_batch.validate_batch`) all at once, or none.

        As `submit` does for one task: the callback URL (for every task) is checked, the
        queues' depth limit counts each task, and an `idempotency_key` names the whole batch.
        """
        if callback_url is not None:
            check_callback(callback_url, self.settings)
        if self.settings.max_queue_depth:
            full = check_queue_depths(self.connection, tasks, self.settings.max_queue_depth)
            if full is not None:
                raise QueueFull(
                    f"The {full} queue has no room for this batch of {len(tasks)} tasks "
                    f"(at most {self.settings.max_queue_depth} may wait); nothing was queued."
                )
        job_ids = [str(uuid.uuid4()) for _ in tasks]
        if idempotency_key is not None:
            ttl = max(task.job_type.result_ttl or self.settings.result_ttl for task in tasks)
            earlier = self._batch_idempotency.claim_batch(idempotency_key, job_ids, tasks, ttl, callback_url)
            if earlier is not None:
                views = [self._replayed(task_id, task.job_type) for task_id, task in zip(earlier, tasks)]
                return BatchSubmission(views, replayed=True)
        queues = {task.job_type.queue: self._queue(task.job_type.queue) for task in tasks}
        try:
            staged = enqueue_batch(
                self.connection, queues, tasks, job_ids, self.settings,
                submitted_by=submitted_by, request_id=request_id, callback_url=callback_url,
                counted=not self.settings.redis_min_replicas_ack,
            )
            if self.settings.redis_min_replicas_ack:
                self._confirm_replicated(job_ids)
        except BaseException:
            if idempotency_key is not None:
                self._batch_idempotency.release_batch(idempotency_key, job_ids)
            raise
        log.info("batch of %d tasks received: %s to %s", len(job_ids), job_ids[0], job_ids[-1])
        # Just enqueued under new ids: nothing to read back, as for a single submission.
        views = [
            build_view(StoredTask(job, cancel_requested=False, latest=None, callback=callback))
            for job, callback in staged
        ]
        return BatchSubmission(views, replayed=False)

    def _replayed(self, task_id: str, job_type: JobType) -> TaskView:
        """An earlier task named by an Idempotency-Key, as it is now."""
        try:
            return self._view(self._fetch(task_id))
        except TaskNotFound:  # its first request is still enqueuing it
            return pending_view(task_id, job_type.name, job_type.queue)

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
    def get(self, task_id: str, *, watch_seconds: float | None = None) -> TaskView:
        """The task's view. With `watch_seconds`, its events are published for that long from
        before this read (a waiter's read: `trustcard.task_events`)."""
        return self._view(self._fetch(task_id, watch_seconds))

    @redis_required
    def get_with_progress_log(
        self, task_id: str, *, watch_seconds: float | None = None
    ) -> tuple[TaskView, list[dict[str, Any]]]:
        """The task's view and the progress history its job kept (for event streams), from
        one read (watched as with `get`)."""
        stored = self._fetch(task_id, watch_seconds)
        return self._view(stored), progress_log(job_meta(stored.job))

    @redis_required
    def cancel(self, task_id: str, *, counted: bool = True) -> TaskView:
        """A waiting task is taken off its queue; a running one is stopped by its worker.
        Not `counted`: withdrawn as its submission is refused (`withdraw`)."""
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
                if not cancel_waiting(job, counted=counted):  # counted for /metrics once, in the same transaction
                    rq_status = job.get_status(refresh=True)  # a worker started it meanwhile
            except InvalidJobOperation:
                pass  # already cancelled by someone else
        if rq_status == JobStatus.STARTED:
            self._stop_running(job)
        after = self._view(self._read(job))
        if after.status in (TaskStatus.COMPLETED, TaskStatus.FAILED):
            # It ended by itself meanwhile (its success was on its way as the stop went out):
            # not cancelled, and the contract's answer for an ended task is 409.
            raise TaskAlreadyEnded(
                f"Task {task_id} ended as {after.status} before it could be cancelled.", status=after.status,
            )
        log.info("task %s cancelled (was %s)", task_id, rq_status)
        return after

    @redis_required
    def running(self) -> list[TaskView]:
        """The tasks some worker is running now, on every catalogued queue."""
        views = []
        for queue_name in QUEUE_NAMES:
            registry = StartedJobRegistry(queue_name, connection=self.connection, serializer=JSONSerializer)
            # No clean-up inside a request: `_view` settles an abandoned job by itself.
            for job_id in registry.get_job_ids(cleanup=False):
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

    def _fetch(self, task_id: str, watch_seconds: float | None = None) -> StoredTask:
        if not TASK_ID_PATTERN.match(task_id):
            raise TaskNotFound(f"No task has the id {task_id!r}.")
        job = Job(task_id, connection=self.connection, serializer=JSONSerializer)
        try:
            return self._read(job, watch_seconds)
        except NoSuchJobError:
            raise TaskNotFound(f"No task has the id {task_id!r} (unknown, or its result has expired).") from None

    def _read(self, job: Job, watch_seconds: float | None = None) -> StoredTask:
        """The job's hash, its latest result and, if it is started, whether its worker lives,
        in one round trip (the API's hot path: clients poll it; `trustcard.task_reading`); the
        cancel flag is a field of that same hash."""
        record = read_task(self.connection, job.key, job.id, watch_seconds)
        if not record.raw:
            raise NoSuchJobError(f"No such job: {job.key}")
        job.restore(record.raw)
        latest = job_results.latest(job.id, record.raw, record.results, self.connection, JSONSerializer)
        return StoredTask(job, cancel_requested=CANCEL_FIELD.encode() in record.raw, latest=latest,
                          callback=read_state(record.raw), worker_alive=record.worker_alive)

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

    def _settle_if_abandoned(self, job: Job, worker_alive: bool | None = None) -> bool:
        """A started job whose worker no longer exists will never finish: let RQ's own
        abandoned-job handling fail it (or retry it, by its policy) now, not at the next
        maintenance pass minutes later. The worker's key lives only while it heartbeats. The
        workers' own check settles such tasks too; one settler at a time (`settling`).
        `worker_alive` is what the read found of it (None: ask Redis)."""
        if job.get_status(refresh=False) != JobStatus.STARTED or not job.worker_name:
            return False
        if worker_alive is None:
            worker_alive = bool(self.connection.exists(Worker.redis_worker_namespace_prefix + job.worker_name))
        if worker_alive:
            return False
        with settling(self.connection, job.origin) as ours:
            if not ours:
                return False  # a worker's check is settling this queue now; the next read sees it
            if job.get_status(refresh=True) != JobStatus.STARTED:
                return True  # settled a moment ago by another settler
            self._settle_abandoned(job)
        log.warning("task %s abandoned: its worker %s is gone", job.id, job.worker_name)
        return True

    def _settle_abandoned(self, job: Job) -> None:
        """RQ's clean-up of this job's entries only (marked expired), or, with none left, its failure."""
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

    def _view(self, stored: StoredTask) -> TaskView:
        if self._settle_if_abandoned(stored.job, stored.worker_alive):
            stored = self._read(stored.job)
        return build_view(stored)
