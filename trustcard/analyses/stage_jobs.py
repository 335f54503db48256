"""Enqueueing one stage's job, under the stage's own queue, limits and retries, once.

The web enqueues an analysis's first stage (and the one a retry resumes at); each stage's
job enqueues the next one itself once its own output is stored (`workers.analysis_runner`).
The row reserves each job's id before it is enqueued, so a process that dies in between
leaves a stage that reads pending with no job: the repairs (`trustcard.analyses.stranded`)
enqueue it then. Whoever enqueues a stage's job first claims its id (`claim`): of the
submitter, a stage handing on, readers and the web processes' check, one enqueues it.
"""

from __future__ import annotations

import uuid

from redis import Redis
from rq import Queue
from rq.job import Job, Retry
from rq.serializers import JSONSerializer

from trustcard.analyses.stages import Stage
from trustcard.catalogue import ANALYSIS_STAGE


CLAIM_PREFIX = "trustcard:enqueue-claim:"
CLAIM_SECONDS = 15
"""How long a claim to enqueue a stage's job holds: one that died holding it frees it this late."""

_CLAIM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return 1 end
return 0
"""


def new_job_id() -> str:
    return str(uuid.uuid4())


def claim(connection: Redis, job_id: str) -> bool:
    """True for the one caller that may enqueue the stage job `job_id` now: it is not in Redis
    yet, and nobody claimed it in the last `CLAIM_SECONDS`. One script call, which replaces the
    EXISTS a hand-off made anyway."""
    return bool(connection.eval(_CLAIM, 2, Job.key_for(job_id), CLAIM_PREFIX + job_id, CLAIM_SECONDS))


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
