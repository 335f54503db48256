"""Analysis rows: created, changed under a row lock, and read; shared by the web and the stages.

A stage's change is a function of the row applied inside one transaction that holds the
row's lock (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite serialises writers anyway), so a
stage's end and a cancel cannot overwrite each other. `stages` is JSON: a change works on a
copy and assigns it back, so SQLAlchemy sees it.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from trustcard.analyses.stages import Stage
from trustcard.models import Analysis

log = logging.getLogger(__name__)

T = TypeVar("T")
StageEntries = list[dict[str, Any]]

WRITE_RETRY_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.0)
"""Waits between attempts at a stage's write; the last one repeats until the deadline."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_stage_entries(stages: tuple[Stage, ...]) -> StageEntries:
    """Each stage of a new analysis, not started."""
    return [
        {"name": stage.name, "queue": stage.queue, "status": "pending", "output": None, "error": None,
         "worker": None, "job_id": None, "runs": 0, "started_at": None, "ended_at": None}
        for stage in stages
    ]


def change(engine: Engine, analysis_id: str, apply: Callable[[Analysis, StageEntries], T]) -> T | None:
    """Apply `apply(row, stages)` to the locked row and commit; None when there is no such row.
    `apply` changes `stages` (a copy) in place; it is stored back with the row. `updated_at`
    moves only when something changed: a look that changes nothing (a callback claim on an
    analysis without a Callback-URL) must not alter the view a client already read as final."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        row = session.scalars(select(Analysis).where(Analysis.id == analysis_id).with_for_update()).first()
        if row is None:
            return None
        stages = copy.deepcopy(row.stages)
        answer = apply(row, stages)
        if stages != row.stages:
            row.stages = stages
        if session.is_modified(row):
            row.updated_at = utcnow()
    return answer


def change_durably(
    engine: Engine, analysis_id: str, apply: Callable[[Analysis, StageEntries], T], deadline: float
) -> T | None:
    """`change`, tried again after a database error until it is stored or `deadline`
    (`time.monotonic()`) passes: a stage does not end before its output is stored."""
    attempt = 0
    while True:
        try:
            return change(engine, analysis_id, apply)
        except (OperationalError, DBAPIError) as error:
            wait = WRITE_RETRY_SECONDS[min(attempt, len(WRITE_RETRY_SECONDS) - 1)]
            if time.monotonic() + wait > deadline:
                raise
            log.warning("analysis %s: database write failed (%s); trying again in %.2f s",
                        analysis_id, str(error).splitlines()[0], wait)
            time.sleep(wait)
            attempt += 1


def read(engine: Engine, analysis_id: str) -> Analysis | None:
    with Session(engine, expire_on_commit=False) as session:
        return session.get(Analysis, analysis_id)


def active_for(engine: Engine, url: str) -> Analysis | None:
    """The analysis of `url` under way, if any (there is at most one)."""
    with Session(engine, expire_on_commit=False) as session:
        return session.scalars(
            select(Analysis).where(Analysis.url == url, Analysis.status.in_(("pending", "running")))
        ).first()
