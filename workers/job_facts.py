"""What the worker reads off a job: its hard time limit, its log context, its result's preview."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from trustcard import logs

from trustcard.catalogue import BY_FUNCTION
from trustcard.config import load_settings

if TYPE_CHECKING:
    from rq.job import Job

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


def preview(value: Any) -> str:
    """A result, short enough for one log line."""
    text = repr(value)
    return text if len(text) <= RESULT_PREVIEW_CHARACTERS else text[: RESULT_PREVIEW_CHARACTERS - 3] + "..."


def task_log_context(job: Job) -> AbstractContextManager[None]:
    """The log context of `job`: its id, and the request id and client the web kept in its meta."""
    try:
        meta = job.meta or {}
    except Exception:  # noqa: BLE001 - an unreadable job is still logged, by id
        meta = {}
    return logs.bound(task_id=job.id, request_id=meta.get("request_id"), client=meta.get("submitted_by"))
