"""A stage that reads pending with no job: its job's id was reserved in the row, and whoever was
to enqueue it died first (the web between the row's insert and the first stage's enqueue, a
retry between its write and its enqueue, a stage between storing its output and handing on).

Such a stage is enqueued once the row has not changed for `GRACE_SECONDS` (the process that
wrote it enqueues within milliseconds when it lives), by the job id the row reserved, by
whichever of the readers and the web processes' periodic check
(`trustcard.api.stranded_watch`) claims it first (`stage_jobs.claim`): once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError
from sqlalchemy import select, tuple_
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from trustcard.analyses.stage_jobs import claim, enqueue_stage
from trustcard.analyses.stages import find
from trustcard.models import Analysis

if TYPE_CHECKING:
    from redis import Redis
    from sqlalchemy import Engine

log = logging.getLogger(__name__)

GRACE_SECONDS = 10.0
"""How long a row must have stayed unchanged with its stage pending and no job before it is queued."""
CHECK_BATCH = 100
"""Rows under way one check reads; the next check goes on after the last one."""
UNDER_WAY = ("pending", "running")


def waiting_stage(row: Analysis) -> dict[str, Any] | None:
    """The stage the analysis waits on if it has no job to run it: the first stage not completed,
    still pending, its job id reserved."""
    if row.status not in UNDER_WAY:
        return None
    entry = next((e for e in row.stages if e["status"] != "completed"), None)
    if entry is None or entry["status"] != "pending" or not entry.get("job_id"):
        return None
    return entry


def unchanged_for(row: Analysis, now: datetime | None = None) -> float:
    """Seconds since the row was last written."""
    updated = row.updated_at
    if updated.tzinfo is None:  # SQLite gives back naive times; they are UTC
        updated = updated.replace(tzinfo=timezone.utc)
    return ((now or datetime.now(timezone.utc)) - updated).total_seconds()


def queue_stage(connection: Redis, row: Analysis, entry: dict[str, Any], *, result_ttl: int, failure_ttl: int,
                request_id: str | None = None) -> bool:
    """Enqueue `entry`'s job by its reserved id, if this caller claims it; True when it did."""
    stage = find(str(entry["name"]))
    job_id = str(entry["job_id"])
    if stage is None or not claim(connection, job_id):
        return False
    enqueue_stage(connection, row.id, stage, job_id, result_ttl=result_ttl, failure_ttl=failure_ttl,
                  submitted_by=row.submitted_by, request_id=request_id)
    return True


def queue_if_stranded(connection: Redis, row: Analysis, *, result_ttl: int, failure_ttl: int,
                      now: datetime | None = None) -> bool:
    """`row`'s waiting stage enqueued if the row stayed unchanged `GRACE_SECONDS` and its job is
    not in Redis (and this caller claims it); True when it was."""
    entry = waiting_stage(row)
    if entry is None or unchanged_for(row, now) < GRACE_SECONDS:
        return False
    if not queue_stage(connection, row, entry, result_ttl=result_ttl, failure_ttl=failure_ttl):
        return False
    log.warning("analysis %s: stage %s was never queued (its enqueuer died); queued now", row.id, entry["name"])
    return True


class StrandedCheck:
    """The web processes' periodic pass (`trustcard.api.stranded_watch`) over the analyses
    under way, a batch at a time, for the ones nobody reads (a client waiting for its
    Callback-URL): an index range read per batch."""

    def __init__(self) -> None:
        self.after: tuple[datetime, str] | None = None
        self._unreadable: set[str] = set()
        """Rows said to be unreadable already (each said once per process)."""

    def run(self, engine: Engine, connection: Redis, *, result_ttl: int, failure_ttl: int) -> list[str]:
        """One batch; returns the ids of the analyses whose stage it queued."""
        query = select(Analysis).where(Analysis.status.in_(UNDER_WAY))
        if self.after is not None:
            query = query.where(tuple_(Analysis.created_at, Analysis.id) > tuple_(*self.after))
        query = query.order_by(Analysis.created_at, Analysis.id).limit(CHECK_BATCH)
        with Session(engine, expire_on_commit=False) as session:
            rows = list(session.scalars(query))
        self.after = (rows[-1].created_at, rows[-1].id) if len(rows) == CHECK_BATCH else None
        return [row.id for row in rows if self._queued(connection, row, result_ttl, failure_ttl)]

    def _queued(self, connection: Redis, row: Analysis, result_ttl: int, failure_ttl: int) -> bool:
        """`queue_if_stranded` for one row; a row it cannot read (its stages malformed, say) is
        said once and passed over, so the rows after it are still checked. A database or a
        Redis that fails ends the round (the caller says so)."""
        try:
            return queue_if_stranded(connection, row, result_ttl=result_ttl, failure_ttl=failure_ttl)
        except (SQLAlchemyError, RedisError):
            raise
        except Exception:  # noqa: BLE001 - one bad row must not stop the check of the others
            if row.id not in self._unreadable:
                self._unreadable.add(row.id)
                log.exception("analysis %s: the stranded-stage check cannot read its row; passed over", row.id)
            return False
