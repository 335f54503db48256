"""The analysis row follows its stage job's failure when the job could not write it itself.

A stage's job records its own failure in the row (`workers.analysis_runner`), but not when its
job process is killed (SIGKILL, the hard limit, its worker gone): RQ then fails the job (or
retries it by its policy, and the retry runs the stage), and the row, untouched, would read
`running` (or `pending`, when the kill came before the stage was marked begun) for ever. Whoever
records such a failure calls this: the worker's end of a job (`RecordingWorker`), the workers'
abandoned-task check, and the API's read of the analysis.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from trustcard.analyses import records
from trustcard.analyses.callback import deliver_if_ended
from trustcard.analyses.events import announce

if TYPE_CHECKING:
    from redis import Redis
    from sqlalchemy import Engine

    from trustcard.models import Analysis

log = logging.getLogger(__name__)

UNDER_WAY = ("pending", "running")


def fail_unrecorded_stage(
    engine: Engine, connection: Redis, analysis_id: str, job_id: str, reason: str, ended_at: Any = None
) -> bool:
    """Fail the stage whose job is `job_id`, and the analysis with it, if the row still has that
    stage under way; True when it changed the row. Anything else (the stage already ended, a
    retry gave the stage a new job, the analysis cancelled) is left as it is."""

    def apply(row: Analysis, entries: records.StageEntries) -> bool:
        entry = next((e for e in entries if e.get("job_id") == job_id), None)
        if entry is None or entry["status"] not in UNDER_WAY or row.status not in UNDER_WAY:
            return False
        ended = ended_at or records.utcnow().isoformat().replace("+00:00", "Z")
        entry.update(status="failed", error=reason, ended_at=ended)
        row.status, row.failed_stage, row.ended_at = "failed", entry["name"], records.utcnow()
        row.error = f"Stage {entry['name']} failed: {reason}"
        return True

    if not records.change(engine, analysis_id, apply):
        return False
    log.warning("analysis %s: its stage job %s failed without recording it (%s); the analysis failed",
                analysis_id, job_id, reason)
    announce(connection, analysis_id)
    deliver_if_ended(engine, connection, analysis_id)
    return True
