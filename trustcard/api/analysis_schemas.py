"""Response models of the analysis endpoints (they describe `trustcard.analyses.view`'s dicts)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

AnalysisStatus = Literal["pending", "running", "completed", "failed", "cancelled"]


class AnalysisStage(BaseModel):
    """One stage of an analysis, as it stands."""

    model_config = ConfigDict(extra="allow")

    name: str
    queue: str = Field(description="The queue its job runs on.")
    status: AnalysisStatus
    output: dict[str, Any] | None = Field(description="What the stage produced, once completed.")
    error: str | None = Field(description="Why it failed (one line), or 'Cancelled on request.'.")
    worker: str | None = Field(description="The worker that ran it last.")
    runs: int = Field(ge=0, description="How many times it started.")
    started_at: str | None
    ended_at: str | None


class AnalysisProgress(BaseModel):
    model_config = ConfigDict(extra="allow")

    percent: int = Field(ge=0, le=100)
    completed: int = Field(ge=0, description="Stages completed.")
    total: int = Field(ge=0, description="Stages in all.")
    stage: str | None = Field(description="The stage running or next; null when all are completed.")


class AnalysisResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    trust_score: float | None = Field(description="Null until a real scoring stage exists.")
    stages: dict[str, Any] = Field(description="Each stage's output, by name.")


class Analysis(BaseModel):
    """One analysis of one post: the durable record, kept in the database."""

    model_config = ConfigDict(extra="allow")

    id: str
    url: str = Field(description="The post's canonical URL.")
    shortcode: str
    status: AnalysisStatus
    stages: list[AnalysisStage] = Field(description="In the order they run.")
    progress: AnalysisProgress
    result: AnalysisResult | None = Field(description="Once completed.")
    trust_score: float | None = Field(description="Null until a real scoring stage exists: placeholders give none.")
    error: str | None = Field(description="Why it failed: the stage and its reason.")
    failed_stage: str | None
    submitted_by: str | None
    callback: dict[str, Any] | None = Field(
        description="With a Callback-URL: `{\"url\", \"status\", \"attempts\", \"last_error\"}`, status `waiting` "
        "until the analysis ends, then pending, retrying, delivered or failed; null without one.")
    created_at: str
    updated_at: str
    ended_at: str | None


class AnalysisPage(BaseModel):
    """Analyses, newest first."""

    model_config = ConfigDict(extra="allow")

    analyses: list[Analysis]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last one.")
