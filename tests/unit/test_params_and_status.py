"""Parameter parsing and the mapping from RQ's records to what clients read."""

from __future__ import annotations

import pytest
from rq.job import JobStatus

from trustcard.catalogue import BY_NAME
from trustcard.exceptions import ValidationFailed
from trustcard.status import TaskStatus, summarise_failure, task_status
from trustcard.task_submission import validate_params

ADD = BY_NAME["test.add"]
SLEEP = BY_NAME["test.sleep"]
POST = BY_NAME["analysis.process_post"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"x": "7", "y": "8"}, {"x": 7, "y": 8}),
        ({"x": 7, "y": 8}, {"x": 7, "y": 8}),
        ({"x": "2.5", "y": -1}, {"x": 2.5, "y": -1}),
        ({"x": " 1e3 ", "y": 0}, {"x": 1000.0, "y": 0}),
    ],
)
def test_numbers_keep_their_kind(raw: dict[str, object], expected: dict[str, object]) -> None:
    params = validate_params(ADD, raw)
    assert params == expected
    assert [type(value) for value in params.values()] == [type(value) for value in expected.values()]


@pytest.mark.parametrize(
    ("job", "raw", "parameter"),
    [
        (ADD, {"x": 1}, "y"),
        (ADD, {"x": "nan", "y": 1}, "x"),
        (ADD, {"x": 1, "y": "-inf"}, "y"),
        (ADD, {"x": True, "y": 1}, "x"),
        (ADD, {"x": "1_000", "y": 1}, "x"),
        (ADD, {"x": [1], "y": 1}, "x"),
        (ADD, {"x": 1, "y": 2, "z": 3}, "z"),
        (SLEEP, {"seconds": -0.5}, "seconds"),
        (SLEEP, {"seconds": 3600.5}, "seconds"),
        (SLEEP, {"seconds": ""}, "seconds"),
        (POST, {"url": "https://example.com/p/abc/"}, "url"),
        (POST, {"url": "javascript:alert(1)"}, "url"),
    ],
)
def test_bad_parameters_are_named(job: object, raw: dict[str, object], parameter: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        validate_params(job, raw)  # type: ignore[arg-type]
    assert [problem["parameter"] for problem in raised.value.details["problems"]] == [parameter]
    assert parameter in raised.value.message


def test_instagram_post_urls_are_accepted() -> None:
    for url in ("https://www.instagram.com/p/C0dE_-1/", "https://instagram.com/reel/abc123", "https://www.instagram.com/p/x/?igsh=1"):
        assert validate_params(POST, {"url": url}) == {"url": url}


@pytest.mark.parametrize(
    ("rq_status", "cancelled", "expected"),
    [
        (JobStatus.QUEUED, False, TaskStatus.PENDING),
        (JobStatus.DEFERRED, False, TaskStatus.PENDING),
        (JobStatus.SCHEDULED, False, TaskStatus.PENDING),
        (None, False, TaskStatus.PENDING),
        (JobStatus.STARTED, False, TaskStatus.STARTED),
        (JobStatus.FINISHED, False, TaskStatus.COMPLETED),
        (JobStatus.FAILED, False, TaskStatus.FAILED),
        (JobStatus.STOPPED, False, TaskStatus.CANCELLED),
        (JobStatus.CANCELED, False, TaskStatus.CANCELLED),
        (JobStatus.STARTED, True, TaskStatus.CANCELLED),
        (JobStatus.FAILED, True, TaskStatus.CANCELLED),
        (JobStatus.FINISHED, True, TaskStatus.COMPLETED),
        ("finished", False, TaskStatus.COMPLETED),
    ],
)
def test_status_mapping(rq_status: str | None, cancelled: bool, expected: TaskStatus) -> None:
    assert task_status(rq_status, cancelled) is expected


TRACEBACK = """Traceback (most recent call last):
  File "rq/worker/base.py", line 1671, in perform_job
    return_value = job.perform()
ZeroDivisionError: division by zero
"""


@pytest.mark.parametrize(
    ("exc_string", "expected"),
    [
        (TRACEBACK, "ZeroDivisionError: division by zero"),
        (
            TRACEBACK.replace("ZeroDivisionError: division by zero", "rq.timeouts.JobTimeoutException: Task exceeded maximum timeout value (240 seconds)"),
            "Timed out: the job ran past its soft time limit of 240 s.",
        ),
        (
            "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9); ",
            "The job's process was killed by signal 9 (SIGKILL, for example by the out-of-memory killer).",
        ),
        ("Work-horse terminated unexpectedly; waitpid returned 256; ", "The job's process exited unexpectedly (status 256)."),
        (None, "The job failed without recording a reason."),
        ("", "The job failed without recording a reason."),
    ],
)
def test_failures_read_as_one_line(exc_string: str | None, expected: str) -> None:
    assert summarise_failure(exc_string) == expected


def test_a_long_reason_is_cut() -> None:
    assert len(summarise_failure("ValueError: " + "x" * 5000)) == 500


def test_ended_statuses() -> None:
    assert {status for status in TaskStatus if status.has_ended} == {
        TaskStatus.COMPLETED,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
    }
