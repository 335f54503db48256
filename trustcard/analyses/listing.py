"""Pages of analyses, newest first, by post or by status, with opaque cursors.

A cursor is the (created_at, id) of the last analysis of a page: the next page starts
after it, so rows added meanwhile neither repeat nor skip anything (keyset pagination,
served by the (url | status, created_at, id) indexes).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime

from sqlalchemy import Engine, and_, or_, select
from sqlalchemy.orm import Session

from trustcard.exceptions import ValidationFailed
from trustcard.models import Analysis

STATUSES = ("pending", "running", "completed", "failed", "cancelled")
MAX_PAGE = 100


def _encode(row: Analysis) -> str:
    raw = json.dumps([row.created_at.isoformat(), row.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, str]:
    try:
        created, analysis_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(created), str(analysis_id)
    except (ValueError, TypeError):
        raise ValidationFailed(
            "cursor is not one this service gave out.",
            problems=[{"parameter": "cursor", "problem": "is not a cursor from an earlier page"}],
        ) from None


def page(engine: Engine, *, url: str | None, status: str | None, cursor: str | None,
         limit: int) -> tuple[list[Analysis], str | None]:
    """Up to `limit` analyses after `cursor`, and the cursor of the next page (None: the last)."""
    if status is not None and status not in STATUSES:
        raise ValidationFailed(
            f"status must be one of {', '.join(STATUSES)}.",
            problems=[{"parameter": "status", "problem": f"must be one of {', '.join(STATUSES)}"}],
        )
    query = select(Analysis)
    if url is not None:
        query = query.where(Analysis.url == url)
    if status is not None:
        query = query.where(Analysis.status == status)
    if cursor is not None:
        created, analysis_id = _decode(cursor)
        query = query.where(or_(Analysis.created_at < created,
                                and_(Analysis.created_at == created, Analysis.id < analysis_id)))
    query = query.order_by(Analysis.created_at.desc(), Analysis.id.desc()).limit(limit + 1)
    with Session(engine, expire_on_commit=False) as session:
        rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (_encode(rows[-1]) if more and rows else None)
