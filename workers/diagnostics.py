"""The test job types: add, sleep and the ten-second long task of the HTTP contract, fail,
and tally, which counts its own runs for the chaos soak."""

from __future__ import annotations

import time

from rq import get_current_job
from rq.timeouts import JobTimeoutException

from workers.progress import report_progress
from workers.stages import STAGE_NAMES

LONG_TASK_STAGE_SECONDS = 2.0
TALLY_KEY_PREFIX = "trustcard:tally:"
"""`<prefix><task id>`: how many times `tally` started for that task."""
TALLY_TTL_SECONDS = 86_400


def add(x: float, y: float) -> float:
    return x + y


def sleep(seconds: float) -> str:
    time.sleep(seconds)
    return f"Slept for {seconds} seconds"


def tally(x: float, seconds: float = 0) -> dict[str, float]:
    """Count this run under the task's id before anything else, then run `seconds`.

    The chaos soak compares the count with the runs the task's record explains (retries,
    hand-backs, abandoned runs): a job that ran twice unexplained shows here. The result does
    not depend on the count, so a checker can verify it from the parameters alone."""
    job = get_current_job()
    if job is not None:
        key = TALLY_KEY_PREFIX + job.id
        with job.connection.pipeline() as pipeline:
            pipeline.incr(key).expire(key, TALLY_TTL_SECONDS).execute()
    if seconds:
        time.sleep(seconds)
    return {"x": x, "twice": 2 * x}


class DeliberateFailure(Exception):
    """Raised by the `test.fail` job type, to exercise failure handling end to end."""


def fail(message: str = "failed on purpose") -> None:
    raise DeliberateFailure(message)


def long_task() -> dict[str, object]:
    """Walk the five analysis stages, two seconds each, reporting progress as it goes.

    At the soft time limit RQ raises `JobTimeoutException` in here: the stage reached is
    recorded in the progress before the exception goes on, so the task still fails.
    """
    done: list[str] = []
    for index, stage in enumerate(STAGE_NAMES):
        report_progress(int(100 * index / len(STAGE_NAMES)), stage)
        try:
            time.sleep(LONG_TASK_STAGE_SECONDS)
        except JobTimeoutException:
            report_progress(int(100 * index / len(STAGE_NAMES)), stage, stopped="time limit reached")
            raise
        done.append(stage)
    report_progress(100, "Done")
    return {"status": "completed", "progress": done, "percent": 100}
