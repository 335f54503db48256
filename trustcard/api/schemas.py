"""Response models of the HTTP API, in pydantic, so the OpenAPI document's response
schemas come from models rather than hand-written JSON.

The views build plain dicts (from `trustcard.task_view.TaskView` and friends); these models
describe those dicts. The task model is generated from `TaskView` itself, so it has its
fields by construction; real answers validate against the models (a unit test). The models
allow extra keys, as a client should: adding a key to an answer is not a breaking change.
Error answers' models come from the exception classes (`trustcard.api.error_answers`).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from trustcard.status import TaskStatus
from trustcard.task_view import Callback, Progress, TaskView

__all__ = ["Callback", "Progress"]  # the task's nested models, re-exported beside Task


def _model_of(view: type[Any], name: str) -> type[BaseModel]:
    """A response model with exactly the fields of the dataclass `view`: names, order,
    types, descriptions (each field's `Annotated` metadata), and the class docstring."""
    hints = typing.get_type_hints(view, include_extras=True)
    fields: dict[str, Any] = {field.name: hints[field.name] for field in dataclasses.fields(view)}
    return create_model(
        name, __config__=ConfigDict(extra="allow"), __doc__=view.__doc__, __module__=__name__, **fields
    )


Task = _model_of(TaskView, "Task")
"""One task as the API reports it: generated from `trustcard.task_view.TaskView`."""


class SubmittedTask(Task):
    """The answer to a submission: the task as stored, with status `submitted`."""

    status: Literal["submitted"] = Field(  # type: ignore[assignment]
        description="Always 'submitted'; poll the task's URL (the Location header) for its progress."
    )


class CancelledTask(BaseModel):
    """The answer to DELETE: normally `cancelled`; `completed` when the task finished
    in the moment between the request and the stop."""

    model_config = ConfigDict(extra="allow")

    task_id: str
    status: TaskStatus
    error: str | None = Field(description="'Cancelled on request.' once cancelled.")


class RunningTasks(BaseModel):
    """The tasks some worker is running now, on every catalogued queue."""

    model_config = ConfigDict(extra="allow")

    tasks: list[Task]
    count: int = Field(ge=0, description="How many tasks are listed.")


class Health(BaseModel):
    """The health answer: 200 when every part answers, 503 naming the failing ones."""

    model_config = ConfigDict(extra="allow")

    status: Literal["healthy", "unhealthy"]
    database: Literal["connected", "unreachable"]
    redis: Literal["connected", "unreachable"]
    workers: int | None = Field(description="Workers registered in Redis; null when Redis is unreachable.")
    queues: dict[str, int] | None = Field(description="Jobs waiting on each queue; null when Redis is unreachable.")
    failing: list[Literal["redis", "database"]] | None = Field(
        default=None, description="The parts that do not answer; present only when unhealthy."
    )


class Error(BaseModel):
    """Every error answer: a machine-readable code, a human message, and details that
    depend on the error. Errors that carry details have a model of their own, generated
    from their exception class (`trustcard.api.error_answers`)."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="Machine-readable code, e.g. 'task_not_found'.")
    message: str = Field(description="One human-readable sentence.")


class RequestRefusedError(Error):
    """400, 414 or 431 from the web server itself, before the app reads the request: a
    malformed request line, HTTP version or header (400), a request line over the limit
    (414), too many or too large header fields (431)."""

    error: Literal["bad_request", "uri_too_long", "request_header_fields_too_large"]  # type: ignore[assignment]
