"""Database tables, as SQLAlchemy 2 declarative models.

Alembic migrations (`migrations/`) create and change these tables; the app never
creates tables by itself. A test proves the models and the migrations agree.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, String, Text, text
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


ACTIVE_STATUSES = ("pending", "running")
"""An analysis in one of these is under way: at most one per post (a partial unique index)."""


class Analysis(Base):
    """One analysis of one post: its stages' parts, written as each stage ends.

    `stages` is the list of the stages it was started with, in order, each
    `{"name", "queue", "status", "output", "error", "worker", "job_id", "started_at",
    "ended_at"}`; one stage runs at a time, and each write locks the row."""

    __tablename__ = "analyses"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    shortcode: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    stages: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    failed_stage: Mapped[str | None] = mapped_column(String(64), nullable=True)
    trust_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    submitted_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    callback_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    callback: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    """`{"url", "status", "attempts", "last_error"}` once the analysis has ended; None before."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        Index("ix_analyses_url_created_at", "url", "created_at", "id"),
        Index("ix_analyses_status_created_at", "status", "created_at", "id"),
        Index(
            "ux_analyses_active_url",
            "url",
            unique=True,
            sqlite_where=text("status IN ('pending', 'running')"),
            postgresql_where=text("status IN ('pending', 'running')"),
        ),
    )
