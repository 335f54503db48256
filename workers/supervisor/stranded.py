"""Analyses whose next stage was never queued, queued by the workers, for those nobody reads.

The API's read of an analysis queues such a stage (`trustcard.analyses.stranded`); an analysis
whose client waits for its Callback-URL is never read. So the supervisors run the same repair
over the analyses under way, one batch of rows per abandoned-task check, one supervisor at a time
(the settling lock under its own name).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from trustcard.settling import settling

if TYPE_CHECKING:
    from trustcard.analyses.stranded import StrandedCheck
    from workers.supervisor.recording import RecordingWorker

log = logging.getLogger("rq.worker")  # the worker's own log (its handlers: trustcard.logs)

LOCK_NAME = "stranded-analyses"


class StrandedAnalyses:
    """The supervisor's side of the check: its place in the rows, made on the first round, when
    the database layer is imported (not before: a supervisor starts without it)."""

    def __init__(self) -> None:
        self.check: StrandedCheck | None = None

    def run(self, worker: RecordingWorker) -> list[str]:
        if self.check is None:
            from trustcard.analyses.stranded import StrandedCheck

            self.check = StrandedCheck()
        return queue_stranded_analyses(worker, self.check)


def queue_stranded_analyses(worker: RecordingWorker, check: StrandedCheck) -> list[str]:
    """One batch of `check`, if no other supervisor runs it now; the ids of the analyses queued.
    A database that does not answer skips this round."""
    from sqlalchemy.exc import SQLAlchemyError

    from workers import storage

    with settling(worker.connection, LOCK_NAME) as ours:
        if not ours:
            return []
        try:
            return check.run(storage.engine(), worker.connection, result_ttl=worker.settings.result_ttl,
                             failure_ttl=worker.settings.failure_ttl)
        except SQLAlchemyError as error:
            log.warning("stranded-analysis check skipped, the database failed (%s)", str(error).splitlines()[0])
            return []
