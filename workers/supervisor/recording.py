"""`RecordingWorker`: how our worker records jobs' ends through RQ's own `Worker` methods.

The supervisor (`workers.supervisor.supervisor`) is the worker class; this is its base,
the part that changes RQ's own methods rather than adds a loop:

- always the JSON serializer and `CatalogueJob`, whatever the command line says, so no
  pickle is read and only catalogued functions run;
- heartbeats tight enough that a worker killed outright is noticed within about a minute
  (see `trustcard.task_service.TaskService._settle_if_abandoned`);
- each end of a task counted once for `/metrics`, inside the Redis transaction that
  records it; never a retry, never a job handed back at shutdown;
- one log line per job failed; Redis outages survived (heartbeat, maintenance,
  teardown), and a worker Redis forgot registers again;
- the failures only a worker can write: unreadable, Redis lost, handed back at shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rq import worker_registration
from rq.defaults import DEFAULT_JOB_MONITORING_INTERVAL, DEFAULT_WORKER_TTL
from rq.exceptions import DeserializationError, InvalidJobOperation, NoSuchJobError
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import now
from rq.worker import Worker

from trustcard import failures, rq_seams
from trustcard.connections import REDIS_UNAVAILABLE
from trustcard.catalogue import ANALYSIS_STAGE
from trustcard.config import load_settings
from trustcard import task_ends
from trustcard.metrics.ends import count_if_abandoned
from trustcard.metrics.outcomes import TaskOutcome
from trustcard.status import summarise_failure
from workers.job import CatalogueJob
from workers.job_facts import preview

if TYPE_CHECKING:
    from redis.client import Pipeline
    from rq.executions import Execution
    from rq.job import Retry
    from rq.queue import Queue
    from rq.registry import StartedJobRegistry

log = logging.getLogger(__name__)

WORKER_TTL_SECONDS = 35
"""Idle heartbeat: the worker's key lives this long + 60 s; RQ's default is 420."""
JOB_MONITORING_INTERVAL_SECONDS = 5
"""Busy heartbeat: the worker's key lives this long + 60 s while a job runs."""


_STILL_RUNNING = (JobStatus.STARTED.value, JobStatus.CANCELED.value)
"""Statuses under which the worker that started a job still records its end."""


def _as_text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class RecordingWorker(Worker):
    """RQ's `Worker`, JSON only, whose recorded ends are counted once; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        rq_seams.install_speedups()
        kwargs["serializer"] = JSONSerializer
        kwargs["job_class"] = CatalogueJob
        # Tighter heartbeats than RQ's, unless the command line chose its own.
        if kwargs.get("worker_ttl") in (None, DEFAULT_WORKER_TTL):
            kwargs["worker_ttl"] = WORKER_TTL_SECONDS
        if kwargs.get("job_monitoring_interval") in (None, DEFAULT_JOB_MONITORING_INTERVAL):
            kwargs["job_monitoring_interval"] = JOB_MONITORING_INTERVAL_SECONDS
        super().__init__(*args, **kwargs)
        self.settings = load_settings()
        self.shutdown_grace = self.settings.worker_shutdown_grace
        self._ending: tuple[str, TaskOutcome] | None = None
        self._handing_back_job_id: str | None = None
        self.push_exc_handler(count_if_abandoned)  # abandoned jobs failed by the maintenance pass

    # --- failures only a worker writes ------------------------------------------------

    def refuse_unreadable(self, job: Job, queue: Queue) -> bool:
        """A job not stored as JSON (pickle, say) is failed with the reason and never run:
        True when it was."""
        try:
            job.func_name  # noqa: B018 - decodes the job's data
        except DeserializationError:
            reason = failures.UNREADABLE.render()
            self.log.warning("task %s refused: %s", job.id, reason)
            self.handle_job_failure(job, queue=queue, exc_string=reason)
            return True
        return False

    def recover_after_outage(self, job: Job, queue: Queue) -> None:
        """Redis came back, but the job's start or end may not be recorded: put it back on
        its queue if it never started; fail it with the reason (its retry policy may requeue
        it) if it still reads `started`, rather than leave it `started` for ever."""
        try:
            status = job.get_status(refresh=True)
        except (NoSuchJobError, InvalidJobOperation):
            return  # Redis lost its data: the task is gone with it
        if status in (JobStatus.QUEUED, JobStatus.CREATED):
            self.connection.lrem(IntermediateQueue.get_intermediate_queue_key(queue.key), 0, job.id)
            if self.connection.lpos(queue.key, job.id) is None:  # not back there already
                self.connection.lpush(queue.key, job.id)
            self.log.info("task %s put back on queue %s after the Redis outage", job.id, queue.name)
            return
        if status != JobStatus.STARTED:
            return
        if self.settled_without_me(job) is not None:
            # Settled as abandoned while this worker was unreachable, then retried, and now
            # started by another worker: that run is not ours to fail.
            self.log.info("task %s is being run by another worker now; leaving it alone", job.id)
            return
        self.handle_job_failure(job, queue=queue, exc_string=failures.REDIS_LOST.render())

    def recover_after_failover(self) -> list[tuple[Job, Queue]]:
        """After a Redis outage: what a failover may have undone of this worker's records (the
        replica promoted had not received the last of them). A job that reads `started` under
        this worker's name again, while this worker runs something else, would stay so: it
        is failed with the reason (its retry policy may requeue it), as a job whose end was
        lost is. Jobs in a queue's intermediate list that read `queued` were taken and never
        started (by any worker, a moment ago or before the failover): returned, for
        `put_back_if_still_taken` to put back once the workers that are just starting them
        had their moment. A job rolled back further, to its queue, simply runs again. Called
        by the job process, between jobs; reads only the started registries and intermediate
        lists, which hold the few jobs running now."""
        taken: list[tuple[Job, Queue]] = []
        for queue in self.queues:
            started = StartedJobRegistry(queue.name, connection=self.connection, serializer=self.serializer)
            for job_id, _ in started.get_job_and_execution_ids(cleanup=False):
                job = self._read(job_id)
                if job is not None and job.get_status(refresh=False) == JobStatus.STARTED \
                        and job.worker_name == self.name:
                    self.log.warning("task %s: its end was lost in a Redis failover (it reads started again)", job.id)
                    self.handle_job_failure(job, queue=queue, exc_string=failures.REDIS_LOST.render())
            intermediate = IntermediateQueue.get_intermediate_queue_key(queue.key)
            for raw_id in self.connection.lrange(intermediate, 0, -1):
                job = self._read(raw_id.decode())
                if job is not None and job.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.CREATED):
                    taken.append((job, queue))
        return taken

    def put_back_if_still_taken(self, job: Job, queue: Queue) -> None:
        """Back at the front of its queue, a job `recover_after_failover` found taken and not
        started, if it still is so; of several workers doing this, the one whose LREM takes it."""
        if job.get_status(refresh=True) not in (JobStatus.QUEUED, JobStatus.CREATED):
            return  # a worker started it meanwhile
        if not self.connection.lrem(IntermediateQueue.get_intermediate_queue_key(queue.key), 1, job.id):
            return
        if self.connection.lpos(queue.key, job.id) is None:
            self.connection.lpush(queue.key, job.id)
        self.log.warning("task %s: its start was lost in a Redis outage; put back on queue %s", job.id, queue.name)

    def _read(self, job_id: str) -> Job | None:
        try:
            return self.job_class.fetch(job_id, connection=self.connection, serializer=self.serializer)
        except (NoSuchJobError, InvalidJobOperation, DeserializationError):
            return None

    def settled_without_me(self, job: Job) -> str | None:
        """None while `job` is still `started` by this worker (or `canceled` while it ran:
        RQ records such a job's end, and keeps its dependents deferred); else its status now
        ("gone" when Redis no longer has it). A worker cut off from Redis past its heartbeat finds
        its job settled without it (failed as abandoned, or retried and started elsewhere),
        and must not record an end over that. The plain success path checks the same inside
        its script (`CommandBatch.guard`); RQ's own end paths ask this first."""
        status, worker_name = self.connection.hmget(job.key, "status", "worker_name")
        if _as_text(status) in _STILL_RUNNING and _as_text(worker_name) == self.name:
            return None
        return _as_text(status) or "gone"

    def hand_back(self, job: Job, queue: Queue, execution: Execution) -> None:
        """Fail the interrupted job with its reason, then requeue it so another worker runs it."""
        self._handing_back_job_id = job.id  # not an end: another worker runs it
        try:
            self.handle_job_failure(
                job, queue=queue, exc_string=failures.SHUTDOWN_HAND_BACK.render(), execution=execution
            )
        finally:
            self._handing_back_job_id = None
        try:
            FailedJobRegistry(queue.name, connection=self.connection, serializer=self.serializer).requeue(job.id)
            self.log.info("task %s handed back to queue %s", job.id, queue.name)
        except Exception:  # noqa: BLE001 - the job stays failed with its reason, which is still honest
            self.log.exception("task %s could not be requeued; it stays failed", job.id)

    def keep_heartbeats(self, job: Job, execution: Execution) -> None:
        """Heartbeats while a job runs; a Redis outage must not orphan the job process.

        After a network cut longer than the worker's key lives, any reader of RQ's workers set
        (`Worker.all()`, the dashboard) drops this worker: RQ's busy heartbeat writes its key
        back but not its place in that set, so it would run jobs unseen. It registers again.
        (RQ's job heartbeat touches the started registry only where the entry still exists,
        so a job settled meanwhile is not put back there.)"""
        try:
            registered = self._still_registered()
            self.maintain_heartbeats(job, execution)
            if not registered and self.birth_date is not None:
                self._register_again(self.job_monitoring_interval + 60)  # RQ's busy heartbeat's TTL
        except REDIS_UNAVAILABLE as error:
            self.log.warning("task %s: heartbeat failed, Redis unreachable (%s)", job.id, error)

    # --- RQ's recording of ends, counted once -------------------------------------------

    def handle_job_success(
        self, job: Job, queue: Queue, started_job_registry: StartedJobRegistry, execution: Execution
    ) -> None:
        with self._counting_end(job, TaskOutcome.COMPLETED):
            super().handle_job_success(job, queue, started_job_registry, execution)
        duration = (now() - job.started_at).total_seconds() if job.started_at else 0.0
        self.log.info("task %s succeeded in %.3f s: %s", job.id, duration, preview(rq_seams.result_of(job)))

    def handle_job_failure(
        self,
        job: Job,
        queue: Queue,
        started_job_registry: StartedJobRegistry | None = None,
        exc_string: str = "",
        execution: Execution | None = None,
    ) -> None:
        outcome = self._failure_outcome(job)
        with self._counting_end(job, outcome):
            super().handle_job_failure(job, queue, started_job_registry, exc_string, execution)
        self.log.warning("task %s failed: %s", job.id, summarise_failure(exc_string))
        if outcome is TaskOutcome.FAILED and (job.meta or {}).get("job_type") == ANALYSIS_STAGE.name:
            from workers.stage_failures import follow_stage_failure  # the database layer: only when needed

            follow_stage_failure(job, summarise_failure(exc_string))

    def handle_job_retry(
        self, job: Job, queue: Queue, retry: Retry, started_job_registry: StartedJobRegistry, execution: Execution
    ) -> None:
        """A job that returned a `Retry`: an end (failed) only once RQ finds its retries used up."""
        exhausted = bool(job.number_of_retries and job.number_of_retries >= retry.max)  # RQ's own test
        with self._counting_end(job, TaskOutcome.FAILED if exhausted else None):
            super().handle_job_retry(job, queue, retry, started_job_registry, execution)

    def _failure_outcome(self, job: Job) -> TaskOutcome | None:
        """What RQ's `handle_job_failure` is about to make of `job`, by its own tests: stopped
        on request is cancelled, retried is no end yet, else failed. A job handed back at
        shutdown is no end either."""
        if self._handing_back_job_id == job.id:
            return None
        if rq_seams.stopped_job_id(self) == job.id:
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
            task_ends.add_end(pipeline, job, self._ending[1])

    # --- surviving Redis outages ----------------------------------------------------------

    def run_maintenance_tasks(self) -> None:
        try:
            super().run_maintenance_tasks()
        except REDIS_UNAVAILABLE as error:
            self.log.warning("maintenance skipped, Redis unreachable (%s)", error)

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """As RQ's, but when Redis lost our key (a restart without persistence), register
        again; a worker that never registered has nothing to restore, and only heartbeats."""
        if pipeline is not None:
            super().heartbeat(timeout, pipeline)
            return
        try:
            known = self._still_registered()
            super().heartbeat(timeout)
            if not known and self.birth_date is not None:
                self._register_again()
        except REDIS_UNAVAILABLE as error:
            self.log.warning("heartbeat failed, Redis unreachable (%s)", error)

    def _still_registered(self) -> bool:
        """Redis still has this worker: in the workers' set and its key alive. A worker cut off
        from Redis past its TTL (a network cut) comes back to a key that has expired and a set
        that may or may not list it still: RQ's idle heartbeat alone would then leave a key of
        one field, and its busy one a key that no reader of the set finds."""
        with self.connection.pipeline(transaction=False) as pipeline:
            pipeline.sismember(worker_registration.REDIS_WORKER_KEYS, self.key)
            pipeline.exists(self.key)
            listed, alive = pipeline.execute()
        return bool(listed) and bool(alive)

    def _register_again(self, ttl: int | None = None) -> None:
        self.log.warning("worker %s: Redis forgot this worker; registering again", self.name)
        with self.connection.pipeline() as pipeline:
            pipeline.hset(self.key, mapping=self.serialize())
            worker_registration.register(self, pipeline)
            pipeline.expire(self.key, ttl or self.worker_ttl + 60)
            pipeline.execute()

    def teardown(self) -> None:
        try:
            super().teardown()
        except REDIS_UNAVAILABLE as error:
            self.log.warning("could not record this worker's death, Redis unreachable (%s)", error)
