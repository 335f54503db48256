"""What the supervisor records when its job process dies.

- Died running a job: the job ends as the reason for the kill says (stopped on request,
  handed back at shutdown, failed at its hard limit), or as killed by the signal that
  took the process, unless the job recorded its own end first.
- Died holding a job it had taken but not started: the job goes back to the front of
  its queue, unless that keeps happening to it: then it is what kills the job process
  (a poison pill), and it is failed with the reason instead of crashing every process
  that takes it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import JobStatus
from rq.utils import now

from trustcard import failures, rq_seams
from trustcard.failures import KillReason
from workers.job_facts import hard_timeout_of
from workers.supervisor.recording import REDIS_UNAVAILABLE, RecordingWorker

if TYPE_CHECKING:
    from resource import struct_rusage

    from rq.queue import Queue

    from workers.supervisor.slot import SlotView

log = logging.getLogger("rq.worker")  # the worker's own log (its handlers: trustcard.logs)

MAX_DEATHS_BEFORE_START = 3
"""Times a job may be taken by a job process that then dies before starting it; then it fails."""
DEATHS_REMEMBERED = 1000
"""Jobs whose deaths before start are remembered; a poison pill recurs at once."""

ENDED = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
"""Statuses after which nothing may overwrite the job's end."""


def queue_named(worker: RecordingWorker, name: str) -> Queue:
    for queue in worker.queues:
        if queue.name == name:
            return queue
    return worker.queue_class(name, connection=worker.connection, job_class=worker.job_class,
                              serializer=worker.serializer)


def record_death(
    worker: RecordingWorker, view: SlotView, reason: KillReason | None, pid: int, status: int, rusage: struct_rusage
) -> None:
    """The job process died running `view`'s job: record the job's end by `reason`."""
    try:
        job = worker.job_class.fetch(view.job_id, connection=worker.connection, serializer=worker.serializer)
    except NoSuchJobError:
        return
    rq_status = job.get_status(refresh=False)
    if rq_status in ENDED:
        return
    queue = queue_named(worker, job.origin)
    execution = Execution(view.execution_id, job.id, connection=worker.connection, worker_name=worker.name)
    execution.created_at = datetime.fromtimestamp(view.started_wall, tz=timezone.utc)
    worker.executions[execution.id] = execution
    if rq_status != JobStatus.STARTED:
        worker.connection.lrem(queue.intermediate_queue_key, 1, job.id)  # died before it started
    job.ended_at = now()
    try:
        if reason is KillReason.STOPPED:
            rq_seams.record_stopped(worker, job, queue, execution)
        elif reason is KillReason.SHUTDOWN:
            worker.hand_back(job, queue, execution)
        else:
            if reason is KillReason.HARD_LIMIT:
                exc_string = failures.HARD_LIMIT.render(seconds=hard_timeout_of(job))
            else:
                exc_string = failures.killed_text(status)
            worker.handle_work_horse_killed(job, pid, status, rusage)
            worker.handle_job_failure(job, queue=queue, exc_string=exc_string, execution=execution)
    finally:
        worker.executions.pop(execution.id, None)


class PoisonPillGuard:
    """Puts back jobs a dying job process held, and fails the ones that keep killing it."""

    def __init__(self, worker: RecordingWorker) -> None:
        self.worker = worker
        self.deaths_before_start: dict[str, int] = {}

    def put_back(self, job_id: str) -> None:
        worker = self.worker
        try:
            job = worker.job_class.fetch(job_id, connection=worker.connection, serializer=worker.serializer)
            if job.get_status(refresh=False) != JobStatus.QUEUED:
                return
            queue = queue_named(worker, job.origin)
            deaths = self.deaths_before_start[job_id] = self.deaths_before_start.get(job_id, 0) + 1
            if deaths >= MAX_DEATHS_BEFORE_START:
                del self.deaths_before_start[job_id]
                worker.connection.lrem(queue.intermediate_queue_key, 1, job.id)
                reason = failures.JOB_PROCESS_CRASHED.render(deaths=deaths)
                log.error("task %s: %s", job.id, reason)
                worker.handle_job_failure(job, queue=queue, exc_string=reason)
                return
            if len(self.deaths_before_start) > DEATHS_REMEMBERED:
                self.deaths_before_start.clear()
            with worker.connection.pipeline() as pipeline:
                pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
                queue.push_job_id(job.id, pipeline=pipeline, at_front=True)
                pipeline.execute()
            log.info("task %s: put back on queue %s (its job process died before starting it)", job.id, queue.name)
        except NoSuchJobError:
            return
        except REDIS_UNAVAILABLE as error:
            log.error("task %s: could not be put back, Redis unreachable (%s)", job_id, error)
