"""Database tables, as SQLAlchemy 2 declarative models.

Alembic migrations (`migrations/`) create and change these tables; the app never
creates tables by itself. A test proves the models and the migrations agree.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, Float, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    """Base of every table; `Base.metadata` is what migrations are compared against."""


class PostAnalysis(Base):
    """The outcome of one `analysis.process_post` task, kept after RQ's result expires."""

    __tablename__ = "post_analyses"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048), index=True)
    trust_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
