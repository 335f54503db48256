"""The models of `POST /tasks/batch` for the OpenAPI document: the body, one task model per
catalogued job type (its `type` picks its `params` model), and the answer.

The body is checked by `trustcard.task_batch.validate_batch`, whose problems name each bad
task by its index; these models describe the same rules, and a unit test holds them together.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from trustcard.api.schemas import Task
from trustcard.catalogue import JOB_TYPES, JobType
from trustcard.task_batch import MAX_BATCH_TASKS


def _task_model(job_type: JobType) -> type[BaseModel]:
    """`{"type": "<name>", "params": {...}}` for one job type; `params` may be left out when
    the type needs none."""
    needs_params = any(field.is_required() for field in job_type.params.model_fields.values())
    params: Any = (job_type.params, Field(description="Its parameters.")) if needs_params else (
        job_type.params, Field(default_factory=job_type.params, description="Its parameters, if any.")
    )
    name = "".join(part.title() for part in job_type.name.replace("_", ".").split(".")) + "BatchTask"
    return create_model(  # type: ignore[no-any-return, call-overload]
        name,
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"A {job_type.name} task: {job_type.summary}",
        __module__=__name__,
        type=(Literal[job_type.name], Field(description="The job type.")),  # type: ignore[valid-type]
        params=params,
    )


TASK_MODELS = tuple(_task_model(job_type) for job_type in JOB_TYPES)
AnyTask = Annotated[Union[TASK_MODELS], Field(discriminator="type")]  # type: ignore[valid-type]


class BatchRequest(BaseModel):
    """Tasks of any catalogued job types, checked all together: one bad task refuses the batch."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[AnyTask] = Field(  # type: ignore[valid-type]
        min_length=1, max_length=MAX_BATCH_TASKS, description=f"1 to {MAX_BATCH_TASKS:,} tasks, queued in this order."
    )


class SubmittedBatch(BaseModel):
    """The answer to a batch: every task as GET /tasks/{task_id} answers it, in the order given."""

    model_config = ConfigDict(extra="allow")

    tasks: list[Task]  # type: ignore[valid-type]
