"""A job's hard time limit, and how a result shows in a log line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
