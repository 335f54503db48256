"""`TrustCardWorker`: RQ's forking worker, with the promises stock RQ does not keep.

Started as `rq worker --worker-class workers.worker.TrustCardWorker ...` (see the
Procfile). On top of `rq.Worker` it:

- always uses the JSON serializer and `CatalogueJob`, whatever the command line says,
  so no pickle is read and only catalogued functions run;
- enforces the hard time limit from the job's meta (RQ's own is `timeout + 60 s`),
  kills the job process there and fails the task with a reason that says so;
- skips a job that was cancelled in the moment between dequeue and start;
- survives Redis going away: waits for it instead of exiting, and registers itself
  again when Redis comes back without its data;
- shuts down within a platform's grace period: on SIGTERM it takes no new job, lets
  the current one run for `WORKER_SHUTDOWN_GRACE` seconds, then kills it and puts it
  back on its queue (a second SIGTERM does that at once);
- heartbeats often enough that a worker killed outright is noticed within about a
  minute (see `trustcard.task_service.TaskService._settle_if_abandoned`);
- logs one line per job received, succeeded (with duration and result) or failed;
- counts each end of a task once for `/metrics` (`trustcard.metrics`), inside the Redis
  transaction that records it; never a retry, never a job handed back at shutdown.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import worker_registration
from rq.defaults import DEFAULT_JOB_MONITORING_INTERVAL, DEFAULT_WORKER_TTL
from rq.exceptions import DeserializationError, InvalidJobOperation, NoSuchJobError
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from rq.timeouts import HorseMonitorTimeoutException
from rq.utils import now
from rq.worker import Worker

from trustcard import rq_speedups
from trustcard.catalogue import BY_FUNCTION
from trustcard.config import load_settings
from trustcard.metrics import store as metrics
from trustcard.metrics.ends import cancel_waiting, count_if_abandoned
from trustcard.metrics.outcomes import TaskOutcome
from trustcard.status import CANCEL_FIELD, summarise_failure
from workers.job import CatalogueJob

if TYPE_CHECKING:
    from redis.client import Pipeline
    from rq.executions import Execution
    from rq.job import Retry
    from rq.queue import Queue
    from rq.registry import StartedJobRegistry

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
REDIS_RETRY_MAX_SECONDS = 5.0
"""Longest pause between two attempts to reach a Redis that went away."""
WORKER_TTL_SECONDS = 35
"""Idle heartbeat: the worker's key lives this long + 60 s; RQ's default is 420."""
JOB_MONITORING_INTERVAL_SECONDS = 5
"""Busy heartbeat: the worker's key lives this long + 60 s while a job runs."""
RESULT_PREVIEW_CHARACTERS = 120


def hard_timeout_of(job: Job) -> int:
    """The job's hard limit: from its meta (set at submit), else the catalogue, else settings."""
    value = (job.meta or {}).get("hard_timeout")
    if isinstance(value, int) and value > 0:
        return value
    job_type = BY_FUNCTION.get(job.func_name or "")
    if job_type and job_type.hard_timeout:
        return job_type.hard_timeout
    return load_settings().job_timeout


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= RESULT_PREVIEW_CHARACTERS else text[: RESULT_PREVIEW_CHARACTERS - 3] + "..."


class TrustCardWorker(Worker):
    """A forking RQ worker with hard limits, JSON only, graceful shutdown, Redis outages survived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        rq_speedups.install()
        kwargs["serializer"] = JSONSerializer
        kwargs["job_class"] = CatalogueJob
        # Tighter heartbeats than RQ's, unless the command line chose its own.
        if kwargs.get("worker_ttl") in (None, DEFAULT_WORKER_TTL):
            kwargs["worker_ttl"] = WORKER_TTL_SECONDS
        if kwargs.get("job_monitoring_interval") in (None, DEFAULT_JOB_MONITORING_INTERVAL):
            kwargs["job_monitoring_interval"] = JOB_MONITORING_INTERVAL_SECONDS
        super().__init__(*args, **kwargs)
        self.max_connection_wait_time = REDIS_RETRY_MAX_SECONDS
        self.settings = load_settings()
        self.shutdown_grace = self.settings.worker_shutdown_grace
        self._shutdown_deadline: float | None = None
        self._hard_limited_job_id: str | None = None
        self._interrupted_job_id: str | None = None
        self._ending: tuple[str, TaskOutcome] | None = None
        self._handing_back_job_id: str | None = None
        self.push_exc_handler(count_if_abandoned)  # abandoned jobs failed by the maintenance pass

    # --- running one job -------------------------------------------------------

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            if not self._is_readable(job, queue):
                return
            if self.connection.hexists(job.key, CANCEL_FIELD):
                self.log.info("task %s was cancelled before it started; not running it", job.id)
                cancel_waiting(job)
                return
            self.log.info("task %s received: %s", job.id, (job.meta or {}).get("job_type") or job.func_name)
            super().execute_job(job, queue)
        except REDIS_DOWN as error:
            self.log.error("task %s: lost Redis while running it (%s)", job.id, error)
            self._wait_for_redis()
            self._settle_after_outage(job, queue)

    def _is_readable(self, job: Job, queue: Queue) -> bool:
        """A job not stored as JSON (pickle, say) is failed with the reason, never run."""
        try:
            job.func_name  # noqa: B018 - decodes the job's data
        except DeserializationError:
            reason = "UnreadableJob: the job was not stored as JSON; workers run only JSON jobs from the catalogue."
            self.log.warning("task %s refused: %s", job.id, reason)
            self.handle_job_failure(job, queue=queue, exc_string=reason)
            return False
        return True

    def _settle_after_outage(self, job: Job, queue: Queue) -> None:
        """Redis came back, but the job's end could not be recorded: fail it with the reason
        (its retry policy may requeue it) rather than leave it `started` for ever."""
        try:
            status = job.get_status(refresh=True)
        except (NoSuchJobError, InvalidJobOperation):
            return  # Redis lost its data: the task is gone with it
        if status in (JobStatus.QUEUED, JobStatus.CREATED):
            # Taken off the queue, but Redis went away before the start was recorded: put it back.
            self.connection.lrem(IntermediateQueue.get_intermediate_queue_key(queue.key), 0, job.id)
            if self.connection.lpos(queue.key, job.id) is None:  # not back there already
                self.connection.lpush(queue.key, job.id)
            self.log.info("task %s put back on queue %s after the Redis outage", job.id, queue.name)
            return
        if status != JobStatus.STARTED:
            return
        reason = "RedisConnectionLost: Redis went away while the job ran, so its outcome could not be recorded."
        self.handle_job_failure(job, queue=queue, exc_string=reason)

    def setup_work_horse_signals(self) -> None:
        """The job process ignores SIGTERM: platforms send it to every process at a deploy,
        and the parent decides when the job must go (see `request_stop`)."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def monitor_work_horse(self, job: Job, queue: Queue, execution: Execution) -> None:
        """Wait for the job process; kill it at the hard limit or the end of a shutdown grace."""
        job.started_at = now()
        hard_limit = hard_timeout_of(job)
        deadline = time.monotonic() + hard_limit
        retpid = ret_val = rusage = None
        while True:
            wake_at = min(deadline, self._shutdown_deadline or deadline)
            wait = max(1, math.ceil(min(self.job_monitoring_interval, wake_at - time.monotonic())))
            try:
                with self.death_penalty_class(wait, HorseMonitorTimeoutException):
                    retpid, ret_val, rusage = self.wait_for_horse()
                break
            except HorseMonitorTimeoutException:
                if time.monotonic() >= deadline:
                    self.log.warning("task %s: hard time limit of %d s reached, killing it", job.id, hard_limit)
                    self._hard_limited_job_id = job.id
                elif self._shutdown_deadline is not None and time.monotonic() >= self._shutdown_deadline:
                    self.log.warning("task %s: shutdown grace over, handing it back to the queue", job.id)
                    self._interrupted_job_id = job.id
                else:
                    self._keep_heartbeats(job, execution)
                    continue
                self.kill_horse()
                retpid, ret_val, rusage = self.wait_for_horse()
                break
            except OSError as error:
                if error.errno != errno.EINTR:
                    raise
                self._keep_heartbeats(job, execution)

        self._horse_pid = 0
        self.executions.pop(execution.id, None)
        if ret_val == os.EX_OK:
            return
        self._settle_dead_horse(job, queue, execution, retpid, ret_val, rusage)

    def _settle_dead_horse(
        self, job: Job, queue: Queue, execution: Execution, retpid: Any, ret_val: Any, rusage: Any
    ) -> None:
        """The job process ended badly: record why, unless it already recorded an end."""
        if self._stopped_job_id == job.id:
            self._handle_stopped_job(job, queue, execution)
            return
        if job.get_status() in (JobStatus.FINISHED, JobStatus.FAILED):
            return
        job.ended_at = now()
        if self._interrupted_job_id == job.id:
            self._interrupted_job_id = None
            self._hand_back(job, queue, execution)
            return
        if self._hard_limited_job_id == job.id:
            self._hard_limited_job_id = None
            reason = (
                f"TimeLimitExceeded: the job ran past its hard time limit of {hard_timeout_of(job)} s "
                "and its process was killed."
            )
        else:
            signal_note = f" (signal {os.WTERMSIG(ret_val)})" if ret_val and os.WIFSIGNALED(ret_val) else ""
            reason = f"Work-horse terminated unexpectedly; waitpid returned {ret_val}{signal_note}"
        self.handle_work_horse_killed(job, retpid, ret_val, rusage)
        self.handle_job_failure(job, queue=queue, exc_string=reason, execution=execution)

    def _hand_back(self, job: Job, queue: Queue, execution: Execution) -> None:
        """Fail the interrupted job with its reason, then requeue it so another worker runs it."""
        reason = "WorkerShutdown: the worker shut down before the job finished; it was put back on its queue."
        self._handing_back_job_id = job.id  # not an end: another worker runs it
        try:
            self.handle_job_failure(job, queue=queue, exc_string=reason, execution=execution)
        finally:
            self._handing_back_job_id = None
        try:
            FailedJobRegistry(queue.name, connection=self.connection, serializer=self.serializer).requeue(job.id)
            self.log.info("task %s handed back to queue %s", job.id, queue.name)
        except Exception:  # noqa: BLE001 - the job stays failed with its reason, which is still honest
            self.log.exception("task %s could not be requeued; it stays failed", job.id)

    def _keep_heartbeats(self, job: Job, execution: Execution) -> None:
        """Heartbeats while a job runs; a Redis outage must not orphan the job process."""
        try:
            self.maintain_heartbeats(job, execution)
        except REDIS_DOWN as error:
            self.log.warning("task %s: heartbeat failed, Redis unreachable (%s)", job.id, error)

    # --- one log line per outcome ----------------------------------------------

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, execution: Execution
    ) -> None:
        with self._counting_end(job, TaskOutcome.COMPLETED):
            super().handle_job_success(job, queue, started_job_registry, execution)
        started = job.started_at
        duration = (now() - started).total_seconds() if started else 0.0
        self.log.info("task %s succeeded in %.3f s: %s", job.id, duration, _preview(job._result))

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: StartedJobRegistry | None = None,
        exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        with self._counting_end(job, self._failure_outcome(job)):
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
        self.log.warning("task %s failed: %s", job.id, summarise_failure(exc_string))

    def handle_job_retry(
        self, job: Job, queue: Queue, retry: Retry, started_job_registry: StartedJobRegistry, execution: Execution
    ) -> None:
        """A job that returned a `Retry`: an end (failed) only once RQ finds its retries used up."""
        exhausted = bool(job.number_of_retries and job.number_of_retries >= retry.max)  # RQ's own test
        with self._counting_end(job, TaskOutcome.FAILED if exhausted else None):
            super().handle_job_retry(job, queue, retry, started_job_registry, execution)

    # --- counting each end once, in the transaction that records it ---------------

    def _failure_outcome(self, job: Job) -> TaskOutcome | None:
        """What RQ's `handle_job_failure` is about to make of `job`, by its own tests: stopped
        on request is cancelled, retried is no end yet, else failed. A job handed back at
        shutdown is no end either."""
        if self._handing_back_job_id == job.id:
            return None
        if self._stopped_job_id == job.id:
            return TaskOutcome.CANCELLED
        if job.should_retry:
            return None
        return TaskOutcome.FAILED

    @contextmanager
    def _counting_end(self, job: Job, outcome: TaskOutcome | None) -> Iterator[None]:
        """While RQ records `job`'s end, `cleanup_execution` adds the count to its pipeline."""
        self._ending = (job.id, outcome) if outcome is not None else None
        try:
            yield
        finally:
            self._ending = None

    def cleanup_execution(self, job: Job, pipeline: Pipeline, execution: Execution | None = None) -> None:
        """RQ calls this inside the pipeline of every success, failure and retry it records
        (again when it retries a transaction after a WatchError): the count joins it there."""
        super().cleanup_execution(job, pipeline, execution)
        if self._ending is not None and self._ending[0] == job.id:
            metrics.add_end(pipeline, job, self._ending[1])

    # --- shutting down within the platform's grace period -----------------------

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """First SIGTERM/SIGINT: take no new job; give the running one `shutdown_grace` seconds."""
        self._shutdown_deadline = time.monotonic() + self.shutdown_grace
        self.log.info("worker %s: shutdown requested; current job gets %d s to finish", self.name, self.shutdown_grace)
        super().request_stop(signum, frame)

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """Second signal: hand the running job back now instead of leaving it `started`."""
        if self.horse_pid:
            self._shutdown_deadline = time.monotonic()
            self._interrupted_job_id = self.get_current_job_id()
            self._stop_requested = True
            self.kill_horse()
            return
        raise SystemExit()

    # --- surviving Redis outages ----------------------------------------------

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        while True:
            try:
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except REDIS_DOWN as error:
                self.log.error("Redis unreachable while waiting for work (%s)", error)
                self._wait_for_redis()
                if self._stop_requested:
                    return None

    def check_for_suspension(self, burst: bool) -> None:
        try:
            super().check_for_suspension(burst)
        except REDIS_DOWN:
            self._wait_for_redis()

    def run_maintenance_tasks(self) -> None:
        try:
            super().run_maintenance_tasks()
        except REDIS_DOWN as error:
            self.log.warning("maintenance skipped, Redis unreachable (%s)", error)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """As RQ's, but when Redis lost our key (a restart without persistence), register again."""
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        try:
            known = self.connection.sismember(worker_registration.REDIS_WORKER_KEYS, self.key)
            super().heartbeat(timeout)
            if not known:
                self._register_again()
        except REDIS_DOWN as error:
            self.log.warning("heartbeat failed, Redis unreachable (%s)", error)

    def _register_again(self) -> None:
        self.log.warning("worker %s: Redis forgot this worker; registering again", self.name)
        with self.connection.pipeline() as pipeline:
            pipeline.hset(self.key, mapping=self.serialize())
            worker_registration.register(self, pipeline)
            pipeline.expire(self.key, self.worker_ttl + 60)
            pipeline.execute()

    def _wait_for_redis(self) -> None:
        """Block until Redis answers a PING, backing off up to `REDIS_RETRY_MAX_SECONDS`."""
        pause = 0.5
        while not self._stop_requested:
            try:
                self.connection.ping()
                self.log.info("Redis answers again; carrying on")
                self.heartbeat()
                return
            except REDIS_DOWN:
                time.sleep(pause)
                pause = min(pause * 2, REDIS_RETRY_MAX_SECONDS)

    def teardown(self) -> None:
        try:
            super().teardown()
        except REDIS_DOWN as error:
            self.log.warning("could not record this worker's death, Redis unreachable (%s)", error)
