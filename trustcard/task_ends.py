"""What runs when a task ends, whichever way and wherever it ends: the one hook.

Every end of a task (a worker's success or failure, a cancel, a job process's death, an
abandoned job found by a read) passes through `job_end_commands`, so that none can forget
a part of it: its counts for /metrics (`trustcard.metrics.store`), the PUBLISH that wakes
whoever waits on it (`trustcard.task_events`), and its webhook delivery when it has a
Callback-URL (`trustcard.callbacks`). The commands run in the same Redis call that records
the end where there is one (`add_end` in RQ's pipeline, the worker's bookkeeping script),
else on their own (`count_end`). Nothing here may break the end it reports.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from trustcard.callbacks import delivery_commands
from trustcard.metrics.outcomes import TaskOutcome, job_type_name, run_seconds
from trustcard.metrics.store import end_commands, run_count, script_args
from trustcard.task_events import end_command

if TYPE_CHECKING:
    from redis import Redis
    from redis.client import Pipeline
    from rq.job import Job

log = logging.getLogger(__name__)


def job_end_commands(job: Job, outcome: TaskOutcome, *, timed: bool = True) -> list[tuple[Any, ...]]:
    """The commands run with `job`'s end: its counts (and what else `_counted_end_commands`
    adds), then the start of its webhook delivery when it has a Callback-URL."""
    commands = _counted_end_commands(job, outcome, timed=timed)
    try:
        return [*commands, *delivery_commands(job)]
    except Exception:  # noqa: BLE001 - a webhook must never break the end it reports
        log.exception("task %s: could not queue its webhook delivery", job.id)
        return commands


def _counted_end_commands(job: Job, outcome: TaskOutcome, *, timed: bool = True) -> list[tuple[Any, ...]]:
    """`end_commands` for `job` (its type and run time read from it), and the PUBLISH that
    wakes whoever waits on its end; [] if that fails."""
    try:
        seconds = run_seconds(job.started_at, job.ended_at) if timed else None
        # The task's end is announced in the same call (trustcard.task_events).
        return [*end_commands(job_type_name(job), outcome, seconds), end_command(job.id)]
    except Exception:  # noqa: BLE001 - counting must never break the end it counts
        log.exception("task %s: could not build its %s count", job.id, outcome.value)
        return []


def add_end(pipeline: Pipeline, job: Job, outcome: TaskOutcome, *, timed: bool = True) -> None:
    """Count `job`'s end inside `pipeline`, the transaction that records it."""
    commands = job_end_commands(job, outcome, timed=timed)
    if commands:
        pipeline.eval(*script_args(commands))


def count_end(connection: Redis, job: Job, outcome: TaskOutcome, *, timed: bool = True) -> bool:
    """Count `job`'s end on its own, where no Redis call of the end itself can carry it."""
    return run_count(connection, job_end_commands(job, outcome, timed=timed), what=f"task {job.id} {outcome.value}")
