"""Parameter models of the job types: what a client may send, validated before enqueueing.

Numbers arrive as query-string text or JSON numbers; both become `int` when they are
whole (so `add(7, 8)` answers `15`, not `15.0`) and `float` otherwise. NaN and the
infinities are refused, as are booleans and unknown parameters.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

FiniteNumber = Annotated[Union[int, float], Field(allow_inf_nan=False)]

INSTAGRAM_POST_PATTERN = r"^https://(www\.)?instagram\.com/(p|reel|reels|tv)/[A-Za-z0-9_-]{1,64}/?(\?.*)?$"


class JobParams(BaseModel):
    """Base of every parameter model: unknown parameters are an error, not ignored."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans(cls, value: object) -> object:
        # JSON true/false would otherwise pass as the numbers 1 and 0.
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        return value


class NoParams(JobParams):
    """For job types that take no parameters."""


class AddParams(JobParams):
    x: FiniteNumber = Field(description="First addend, a finite number.")
    y: FiniteNumber = Field(description="Second addend, a finite number.")


class SleepParams(JobParams):
    seconds: FiniteNumber = Field(ge=0, le=3600, description="How long to sleep, 0 to 3600 seconds.")


class PostParams(JobParams):
    url: str = Field(
        max_length=2048,
        pattern=INSTAGRAM_POST_PATTERN,
        description="Address of an Instagram post, e.g. https://www.instagram.com/p/ABC123/",
    )
