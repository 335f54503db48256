"""Enqueueing one stage's job, under the stage's own queue, limits and retries.

The web enqueues an analysis's first stage (and the one a retry resumes at); each stage's
job enqueues the next one itself once its own output is stored (`workers.analysis_runner`).
"""

from __future__ import annotations

import uuid

from redis import Redis
from rq import Queue
from rq.job import Job, Retry
from rq.serializers import JSONSerializer

from trustcard.analyses.stages import Stage
from trustcard.catalogue import ANALYSIS_STAGE


def new_job_id() -> str:
    return str(uuid.uuid4())


def enqueue_stage(
    connection: Redis,
    analysis_id: str,
    stage: Stage,
    job_id: str,
    *,
    result_ttl: int,
    failure_ttl: int,
    submitted_by: str | None = None,
    request_id: str | None = None,
) -> Job:
    retry = Retry(max=stage.retries, interval=list(stage.retry_backoff) or 0) if stage.retries else None
    queue = Queue(stage.queue, connection=connection, serializer=JSONSerializer)
    return queue.enqueue_call(
        ANALYSIS_STAGE.function,
        kwargs={"analysis_id": analysis_id, "stage": stage.name},
        timeout=stage.soft_timeout,
        result_ttl=result_ttl,
        failure_ttl=failure_ttl,
        meta={
            "job_type": ANALYSIS_STAGE.name,
            "hard_timeout": stage.hard_timeout,
            "analysis_id": analysis_id,
            "stage": stage.name,
            "submitted_by": submitted_by,
            "request_id": request_id,
        },
        retry=retry,
        job_id=job_id,
    )
