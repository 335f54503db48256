"""The commands that start and end a job, as RQ's own methods write them, into a batch.

`bookkeeping.Bookkeeper` sends them to Redis in one script call each (see there why).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

from rq.executions import Execution
from rq.job import Job, JobStatus, Retry
from rq.results import Result
from rq.utils import utcformat
from rq.worker import WorkerStatus

from trustcard import rq_seams
from trustcard.metrics.outcomes import TaskOutcome
from trustcard.task_ends import job_end_commands
from workers.supervisor.bookkeeping import CommandBatch


class BatchWorker(Protocol):
    """What the batches need of the worker: RQ's own methods that write its state."""

    name: str

    def set_state(self, state: str, pipeline: Any = None) -> None: ...

    def increment_successful_job_count(self, pipeline: Any = None) -> None: ...

    def increment_total_working_time(self, job_execution_time: timedelta, pipeline: Any) -> None: ...


def start_batch(worker: BatchWorker, job: Job, heartbeat_ttl: int, intermediate_key: str | None) -> tuple[
    CommandBatch, Execution
]:
    """The commands that start `job`: RQ's `prepare_execution` + `prepare_job_execution`,
    without the worker heartbeat (the supervisor keeps that) and the second job heartbeat."""
    batch = CommandBatch()
    execution = Execution.create(job, heartbeat_ttl, pipeline=batch, worker_name=worker.name)  # type: ignore[arg-type]
    worker.set_state(WorkerStatus.BUSY, pipeline=batch)  # type: ignore[arg-type]
    job.prepare_for_execution(worker.name, batch)  # type: ignore[arg-type]
    batch.persist(job.key)
    if intermediate_key is not None:
        batch.lrem(intermediate_key, 1, job.id)
    return batch, execution


def plain_success(job: Job, return_value: Any, result_ttl: int) -> bool:
    """True when finishing `job` needs nothing beyond `success_batch`."""
    return (
        result_ttl != 0
        and not isinstance(return_value, Retry)
        and not rq_seams.has_success_callback(job)
        and not job.webhooks
        and job.repeats_left is None
        and not job.has_rate_limit
    )


def success_batch(
    worker: BatchWorker, job: Job, execution: Execution, return_value: Any, result_ttl: int, ended_at: datetime
) -> CommandBatch:
    """What RQ's `handle_job_success` writes for a plain job without dependents (`run`
    checks that in the same atomic script: a dependent enqueued later sees this job
    finished), and its count for /metrics (best effort). The job hash is not written back
    whole: only its status, end time and heartbeat changed since it started."""
    job.ended_at = ended_at
    job.last_heartbeat = ended_at
    rq_seams.mark_finished(job, return_value)
    stamp = utcformat(ended_at)
    assert job.started_at is not None
    batch = CommandBatch()
    batch.hset(job.key, mapping={"status": JobStatus.FINISHED.value, "ended_at": stamp, "last_heartbeat": stamp})
    Result.create(
        job,
        Result.Type.SUCCESSFUL,
        return_value=return_value,
        ttl=result_ttl,
        worker_name=worker.name,
        pipeline=batch,
        execution_id=execution.id,
        execution_started_at=execution.created_at,
        execution_ended_at=ended_at,
    )
    job.finished_job_registry.add(job, result_ttl, batch)  # type: ignore[arg-type]
    job.cleanup(result_ttl, pipeline=batch, remove_from_queue=False)  # type: ignore[arg-type]
    execution.delete(job=job, pipeline=batch)  # type: ignore[arg-type]
    worker.increment_successful_job_count(pipeline=batch)  # type: ignore[arg-type]
    worker.increment_total_working_time(ended_at - job.started_at, batch)  # type: ignore[arg-type]
    worker.set_state(WorkerStatus.IDLE, pipeline=batch)  # type: ignore[arg-type]
    batch.best_effort.extend(job_end_commands(job, TaskOutcome.COMPLETED))
    batch.guard = (job.key, worker.name)  # a late end (its worker was cut off) writes nothing
    return batch
