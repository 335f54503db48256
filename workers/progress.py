"""Progress reporting from inside a job: written to the job's meta, read by the API.

Each write also lands in a bounded history in the meta (`progress_log`) and is announced
on the task's channel, in one MULTI/EXEC, so that an event stream that is woken reads the
write it was woken for, and one that reconnects can replay what it missed.
"""

from __future__ import annotations

import logging

from rq import get_current_job

from trustcard.task_events import append_progress, progress_arguments

log = logging.getLogger(__name__)


def report_progress(percent: int, stage: str, **extra: object) -> None:
    """Save `{"percent", "stage", ...}` on the running job; a no-op outside a worker."""
    job = get_current_job()
    if job is None:
        return
    seq = append_progress(job.meta, {"percent": percent, "stage": stage, **extra})
    with job.connection.pipeline() as pipeline:
        pipeline.hset(job.key, "meta", job.serializer.dumps(job.meta))
        pipeline.eval(*progress_arguments(job.id, seq))
        pipeline.execute()
