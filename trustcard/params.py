"""Parameter models of the job types: what a client may send, validated before enqueueing.

Numbers arrive as query-string text or JSON numbers; both become `int` when they are
whole (so `add(7, 8)` answers `15`, not `15.0`) and `float` otherwise. NaN and the
infinities are refused, as are booleans, and unknown parameters are an error.
"""

from __future__ import annotations

import math
from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema, field_validator



def _finite_number(value: object) -> int | float:
    """Accept JSON numbers and their query-string text; whole numbers stay `int`."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    if isinstance(value, str):
        text = value.strip()
        if "_" in text or not text:
            raise ValueError("must be a number")
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise ValueError("must be a number") from None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value
    raise ValueError("must be a number")


FiniteNumber = Annotated[Union[int, float], PlainValidator(_finite_number), WithJsonSchema({"type": "number"})]

INSTAGRAM_POST_PATTERN = r"^https://(www\.)?instagram\.com/(p|reel|reels|tv)/[A-Za-z0-9_-]{1,64}/?(\?.*)?$"


class JobParams(BaseModel):
    """Base of every parameter model: unknown parameters are an error, not ignored."""

    model_config = ConfigDict(extra="forbid")


class NoParams(JobParams):
    """For job types that take no parameters."""


class AddParams(JobParams):
    x: FiniteNumber = Field(description="First addend, a finite number.")
    y: FiniteNumber = Field(description="Second addend, a finite number.")


class SleepParams(JobParams):
    seconds: FiniteNumber = Field(description="How long to sleep, 0 to 3600 seconds.")

    @field_validator("seconds")
    @classmethod
    def _within_an_hour(cls, value: float) -> float:
        if not 0 <= value <= 3600:
            raise ValueError("must be between 0 and 3600")
        return value


class TallyParams(JobParams):
    x: FiniteNumber = Field(description="A number; the result is twice it.")
    seconds: FiniteNumber = Field(default=0, description="How long to run after counting, 0 to 60 seconds.")

    @field_validator("seconds")
    @classmethod
    def _within_a_minute(cls, value: float) -> float:
        if not 0 <= value <= 60:
            raise ValueError("must be between 0 and 60")
        return value


class FailParams(JobParams):
    message: str = Field(default="failed on purpose", max_length=200, description="The error message to raise.")


class PostParams(JobParams):
    url: str = Field(
        max_length=2048,
        pattern=INSTAGRAM_POST_PATTERN,
        description="Address of an Instagram post, e.g. https://www.instagram.com/p/ABC123/",
    )
