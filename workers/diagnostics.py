"""The test job types: add, sleep and the ten-second long task of the HTTP contract, and fail."""

from __future__ import annotations

import time

from rq.timeouts import JobTimeoutException

from workers.progress import report_progress
from workers.stages import STAGE_NAMES

LONG_TASK_STAGE_SECONDS = 2.0


def add(x: float, y: float) -> float:
    return x + y


def sleep(seconds: float) -> str:
    time.sleep(seconds)
    return f"Slept for {seconds} seconds"


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
