"""`trustcard.failures`: each way of failing is written once and read back as the same kind."""

from __future__ import annotations

import os
import signal

import pytest

from trustcard import failures
from trustcard.failures import FailureKind

WRITTEN = [
    (failures.HARD_LIMIT.render(seconds=5), FailureKind.HARD_LIMIT),
    (failures.SHUTDOWN_HAND_BACK.render(), FailureKind.SHUTDOWN_HAND_BACK),
    (failures.REDIS_LOST.render(), FailureKind.REDIS_LOST),
    (failures.UNREADABLE.render(), FailureKind.UNREADABLE),
    ("workers.job.JobNotCatalogued: " + failures.NOT_CATALOGUED.render(function="'os.getcwd'"),
     FailureKind.NOT_CATALOGUED),
    (failures.JOB_PROCESS_CRASHED.render(deaths=3), FailureKind.JOB_PROCESS_CRASHED),
    (failures.killed_text(signal.SIGKILL), FailureKind.KILLED),
    (failures.ABANDONED_BY_STATUS_CHECK.render(), FailureKind.ABANDONED),
    ("Traceback ...\nrq.timeouts.JobTimeoutException: Task exceeded maximum timeout value (240 seconds)",
     FailureKind.SOFT_TIMEOUT),
]


@pytest.mark.parametrize(("text", "kind"), WRITTEN)
def test_each_written_failure_reads_back_as_its_kind(text: str, kind: FailureKind) -> None:
    assert failures.kind_of(text) is kind


def test_the_texts_clients_read_are_unchanged() -> None:
    """Clients and tests match these sentences: they may not move."""
    assert failures.HARD_LIMIT.render(seconds=5) == (
        "TimeLimitExceeded: the job ran past its hard time limit of 5 s and its process was killed."
    )
    assert failures.SHUTDOWN_HAND_BACK.render().startswith("WorkerShutdown: ")
    assert failures.UNREADABLE.render().startswith("UnreadableJob: the job was not stored as JSON")
    assert failures.JOB_PROCESS_CRASHED.render(deaths=3).startswith("JobProcessCrashed:")


def test_a_killed_job_process_names_its_signal() -> None:
    status = signal.SIGKILL  # a wait status for "killed by SIGKILL" is the signal number itself
    assert os.WIFSIGNALED(status)
    assert failures.killed_text(status) == "Work-horse terminated unexpectedly; waitpid returned 9 (signal 9)"
    assert failures.summarise(failures.killed_text(status)).startswith("The job's process was killed by signal 9")


def test_a_template_reads_its_fields_back() -> None:
    assert failures.HARD_LIMIT.find("x\n" + failures.HARD_LIMIT.render(seconds=42)) == {"seconds": "42"}
    assert failures.HARD_LIMIT.find("TimeLimitExceeded: something else") is None


def test_a_job_s_own_exception_is_no_declared_kind() -> None:
    assert failures.kind_of("ZeroDivisionError: division by zero") is None
