"""Submitting a batch of tasks: every task checked first, then all enqueued in one transaction.

A batch is all or nothing. `validate_batch` checks the whole body with the single
submission's own parameter check (`trustcard.task_submission.validate_params`) and names
each bad task by its index (`tasks[3].params.x`); nothing touches Redis until every task
passed. `enqueue_batch` then sends every job, and its count for /metrics, in one MULTI/EXEC:
Redis runs all of it or, refusing it (out of memory, read-only), none of it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from redis import Redis
from rq import Queue
from rq.job import Job

from trustcard.catalogue import JOB_TYPES, JobType, find_by_route
from trustcard.config import Settings
from trustcard.exceptions import IdempotencyKeyReused, ValidationFailed
from trustcard.metrics.outcomes import SubmissionOutcome
from trustcard.metrics.store import SUBMISSIONS_KEY
from trustcard.task_submission import IdempotencyKeys, stage, validate_params
from trustcard.task_view import TaskView

MAX_BATCH_TASKS = 1_000
"""The most tasks one batch may hold: one transaction of this size takes Redis a few ms."""
TASK_FIELDS = ("type", "params")
MESSAGE_PROBLEMS = 3
"""Problems spelled out in the message; `problems` lists every one."""


@dataclass(frozen=True)
class BatchTask:
    """One checked task of a batch: its job type and its parameters as they will be enqueued."""

    job_type: JobType
    params: dict[str, Any]


@dataclass(frozen=True)
class BatchSubmission:
    """The batch's tasks in the order given, and whether they are an earlier batch returned
    for the same Idempotency-Key."""

    tasks: list[TaskView]
    replayed: bool


def validate_batch(body: Mapping[str, Any]) -> list[BatchTask]:
    """Check a batch body, `{"tasks": [{"type": ..., "params": {...}}, ...]}`; one
    `ValidationFailed` naming every bad task and parameter, or the tasks in order."""
    unknown = [key for key in body if key != "tasks"]
    if unknown:
        _refuse([{"parameter": key, "problem": 'is not a field of a batch; send {"tasks": [...]}'} for key in unknown])
    raw_tasks = body.get("tasks")
    if raw_tasks is None:
        _refuse([{"parameter": "tasks", "problem": "is required: a list of 1 to 1,000 tasks"}])
    if not isinstance(raw_tasks, list):
        _refuse([{"parameter": "tasks", "problem": 'must be a list of tasks, like [{"type": "test.add", '
                  '"params": {"x": 1, "y": 2}}]'}])
    if not 1 <= len(raw_tasks) <= MAX_BATCH_TASKS:
        problem = f"must hold 1 to {MAX_BATCH_TASKS:,} tasks; it holds {len(raw_tasks):,}"
        _refuse([{"parameter": "tasks", "problem": problem}])
    tasks: list[BatchTask] = []
    problems: list[dict[str, str]] = []
    for index, raw in enumerate(raw_tasks):
        task, found = _check_task(index, raw)
        if task is not None:
            tasks.append(task)
        problems.extend(found)
    if problems:
        _refuse(problems)
    return tasks


def _check_task(index: int, raw: Any) -> tuple[BatchTask | None, list[dict[str, str]]]:
    """The task at `index`, or the problems that name it (`tasks[<index>]...`)."""
    where = f"tasks[{index}]"
    if not isinstance(raw, dict):
        return None, [{"parameter": where, "problem": "must be an object with `type` and `params`"}]
    problems = [
        {"parameter": f"{where}.{key}", "problem": "is not a field of a task (type, params)"}
        for key in raw if key not in TASK_FIELDS
    ]
    type_name = raw.get("type")
    dotted = isinstance(type_name, str) and "/" not in type_name
    job_type = find_by_route(type_name.replace(".", "/")) if dotted else None
    if type_name is None:
        problems.append({"parameter": f"{where}.type", "problem": "is required"})
    elif job_type is None or job_type.name != type_name:
        known = ", ".join(kind.name for kind in JOB_TYPES)
        problems.append({"parameter": f"{where}.type", "problem": f"is not a job type; one of: {known}"})
    params = raw.get("params", {})
    if not isinstance(params, dict):
        problems.append({"parameter": f"{where}.params", "problem": "must be an object of parameters"})
    if problems or job_type is None:
        return None, problems
    try:
        return BatchTask(job_type, validate_params(job_type, params)), []
    except ValidationFailed as failed:
        return None, [
            {"parameter": f"{where}.params.{problem['parameter']}", "problem": problem["problem"]}
            for problem in failed.details["problems"]
        ]


def _refuse(problems: list[dict[str, str]]) -> NoReturn:
    shown = "; ".join(f"{p['parameter']} {p['problem']}" for p in problems[:MESSAGE_PROBLEMS])
    hidden = len(problems) - MESSAGE_PROBLEMS
    more = f" (and {hidden} more problem{'s' if hidden > 1 else ''}, in `problems`)" if hidden > 0 else ""
    raise ValidationFailed(f"Invalid batch, nothing was queued: {shown}{more}.", problems=problems)


def check_queue_depths(connection: Redis, tasks: Sequence[BatchTask], max_depth: int) -> str | None:
    """The first queue that the batch would take past `max_depth` waiting tasks (one
    round trip for every queue it uses), or None."""
    wanted: dict[str, int] = {}
    for task in tasks:
        wanted[task.job_type.queue] = wanted.get(task.job_type.queue, 0) + 1
    with connection.pipeline(transaction=False) as pipeline:
        for name in wanted:
            pipeline.llen(Queue.redis_queue_namespace_prefix + name)
        depths = pipeline.execute()
    for (name, count), depth in zip(wanted.items(), depths):
        if depth + count > max_depth:
            return name
    return None


class BatchIdempotencyKeys(IdempotencyKeys):
    """An Idempotency-Key that names a whole batch: its tasks' ids and the request. One key
    space with single submissions, so a key used for one is refused (409) for the other."""

    def claim_batch(
        self, key: str, job_ids: list[str], tasks: Sequence[BatchTask], ttl: int, callback_url: str | None
    ) -> list[str] | None:
        """Claim `key` for these job ids; the earlier batch's ids when it is taken."""
        request = {"batch": [[task.job_type.name, task.params] for task in tasks], "callback": callback_url}
        fingerprint = json.dumps(request, sort_keys=True)
        redis_key = self.redis_key(key)
        record = json.dumps({"task_ids": job_ids, "request": fingerprint})
        if self.connection.set(redis_key, record, nx=True, ex=ttl):
            return None
        stored = self.connection.get(redis_key)
        if stored is None:  # expired between the two calls: claim it again
            return self.claim_batch(key, job_ids, tasks, ttl, callback_url)
        earlier = json.loads(stored)
        if earlier["request"] != fingerprint:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was already used for a different request; use a new key for new work."
            )
        return [str(task_id) for task_id in earlier["task_ids"]]

    def release_batch(self, key: str, job_ids: list[str]) -> None:
        """Give `key` up again when the batch that claimed it could not be enqueued."""
        redis_key = self.redis_key(key)
        stored = self.connection.get(redis_key)
        if stored is not None and json.loads(stored).get("task_ids") == job_ids:
            self.connection.delete(redis_key)


def enqueue_batch(
    connection: Redis,
    queues: Mapping[str, Queue],
    tasks: Sequence[BatchTask],
    job_ids: Sequence[str],
    settings: Settings,
    *,
    submitted_by: str | None,
    request_id: str | None,
    callback_url: str | None,
    counted: bool = True,
) -> list[tuple[Job, dict[str, Any] | None]]:
    """Every job of the batch, and their count for /metrics (unless not `counted`, as
    `enqueue`), in one MULTI/EXEC; each job with its callback state (None without a
    callback), in order."""
    with connection.pipeline() as pipeline:
        staged = [
            stage(
                pipeline, queues[task.job_type.queue], task.job_type, task.params, job_id, settings,
                submitted_by=submitted_by, request_id=request_id, callback_url=callback_url,
            )
            for task, job_id in zip(tasks, job_ids)
        ]
        pipeline.hincrby(SUBMISSIONS_KEY, SubmissionOutcome.ACCEPTED.value, len(staged) if counted else 0)
        for reply in pipeline.execute(raise_on_error=False)[:-1]:
            if isinstance(reply, Exception):
                raise reply
    return [(job, callback and callback.to_dict()) for job, callback in staged]
