"""Progress reporting from inside a job: written to the job's meta, read by the API."""

from __future__ import annotations

from rq import get_current_job


def report_progress(percent: int, stage: str, **extra: object) -> None:
    """Save `{"percent", "stage", ...}` on the running job; a no-op outside a worker."""
    job = get_current_job()
    if job is None:
        return
    job.meta["progress"] = {"percent": percent, "stage": stage, **extra}
    job.save_meta()
