"""Ends of a task outside a worker's success and failure handling, each counted once.

- A task cancelled before it started (by the API, or by the worker that took it and found
  the cancel flag): `cancel_waiting` cancels it as `Job.cancel()` does and counts it in the
  same transaction, watching the job so that two cancellers racing count it once, and a
  job that started meanwhile is left to be stopped (and counted) as a running one.
- A task whose worker is gone, failed by RQ's abandoned-job clean-up (the API's early
  settlement, or a worker's maintenance pass): `count_abandoned` counts it once per run,
  since two processes may settle the same job at the same moment.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from redis.exceptions import WatchError
from rq.exceptions import AbandonedJobError
from rq.job import JobStatus

from trustcard.metrics.outcomes import TaskOutcome
from trustcard.metrics.store import run_count
from trustcard.task_ends import add_end, count_end, job_end_commands

if TYPE_CHECKING:
    from rq.job import Job

log = logging.getLogger(__name__)

WAITING_STATUSES = (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED, JobStatus.CREATED)
ABANDONED_MARKER_PREFIX = "trustcard:metrics:abandoned:"
ABANDONED_MARKER_TTL_SECONDS = 86400


def cancel_waiting(job: Job, *, counted: bool = True) -> bool:
    """Cancel `job` if it is still waiting, and count it cancelled in the same transaction.

    False when there was nothing to cancel here: someone else cancelled it first, or it
    started meanwhile (it is running now: stopping it is the caller's business). Not
    `counted`: a task withdrawn because its submission was refused (503 `not_replicated`),
    which was never counted accepted, so its end is no end of /metrics' (nor a webhook's).
    """
    if job.has_rate_limit:  # RQ refuses a caller's pipeline for these; none is catalogued
        if job.get_status(refresh=True) not in WAITING_STATUSES:
            return False
        job.cancel()
        if counted:
            count_end(job.connection, job, TaskOutcome.CANCELLED, timed=False)
        return True
    with job.connection.pipeline() as pipeline:
        while True:
            try:
                pipeline.watch(job.key)
                if job.get_status(refresh=True) not in WAITING_STATUSES:
                    return False
                pipeline.multi()
                job.cancel(pipeline=pipeline)
                if counted:
                    add_end(pipeline, job, TaskOutcome.CANCELLED, timed=False)
                pipeline.execute()
                return True
            except WatchError:
                continue  # the job changed under us: look at it again


def count_abandoned(job: Job, *, retried: bool) -> None:
    """RQ failed `job`, whose worker is gone (unless `retried`: its policy put it back on
    its queue, which is no end). Counted once for this run of the job, whoever settles it;
    no run time, since nobody saw it end."""
    if retried:
        return
    started = job.started_at.isoformat() if job.started_at else "never"
    run_count(
        job.connection,
        job_end_commands(job, TaskOutcome.FAILED, timed=False),
        marker=f"{ABANDONED_MARKER_PREFIX}{job.id}:{started}",
        ttl=ABANDONED_MARKER_TTL_SECONDS,
        what=f"abandoned task {job.id}",
    )


def count_if_abandoned(job: Job, exc_type: type[BaseException] | None, *_exc_info: Any) -> None:
    """An RQ exception handler: `StartedJobRegistry.cleanup` calls it for each abandoned job
    just before it retries or fails it, by the same test as here. Other failures pass by
    (the worker counts them). Returns None, so the handler chain goes on."""
    if exc_type is not None and issubclass(exc_type, AbandonedJobError):
        try:
            count_abandoned(job, retried=bool(job.retries_left and job.retries_left > 0))
        except Exception:  # noqa: BLE001 - a handler must not break RQ's clean-up
            log.exception("metrics: abandoned task %s not counted", job.id)
