"""A stage job's failure that its job could not write into the analysis row, written by the worker.

The stage's job writes its own failures (`analysis_runner`); when its job process is killed
(SIGKILL, the hard limit) or its whole worker vanishes, the worker that records the job's failure
makes the row follow (`trustcard.analyses.following`), so that the analysis ends failed with the
reason even when nobody reads it. Only for failures that end the job: a retry runs the stage again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from rq.exceptions import AbandonedJobError

from trustcard import failures
from trustcard.analyses.following import fail_unrecorded_stage
from trustcard.catalogue import ANALYSIS_STAGE
from workers import storage

if TYPE_CHECKING:
    from rq.job import Job

log = logging.getLogger(__name__)


def follow_stage_failure(job: Job, reason: str) -> None:
    """`job` failed for good with `reason`: if it is an analysis stage's, fail the stage in the
    row unless the job wrote it already. A database that does not answer leaves it to the next
    read of the analysis, which does the same."""
    meta = job.meta or {}
    if meta.get("job_type") != ANALYSIS_STAGE.name or not meta.get("analysis_id"):
        return
    try:
        fail_unrecorded_stage(storage.engine(), job.connection, str(meta["analysis_id"]), job.id, reason)
    except Exception:  # noqa: BLE001 - the job's failure is recorded; the row follows on its next read
        log.exception("analysis %s: the failure of stage job %s not written to its row", meta["analysis_id"], job.id)


def follow_if_abandoned(job: Job, exc_type: type[BaseException] | None, *_exc_info: Any) -> None:
    """An RQ exception handler for `StartedJobRegistry.cleanup`, which calls it just before it
    fails or retries an abandoned job: a stage job failed for good is followed in its row."""
    if exc_type is None or not issubclass(exc_type, AbandonedJobError):
        return
    if job.retries_left and job.retries_left > 0:
        return  # retried: the stage runs again
    follow_stage_failure(job, failures.summarise(failures.ABANDONED_MARK))
