"""The job process's cheaper ways of doing what it does every job, checked against the long
ways they stand in for: the soft time limit, the slot's stop flag, a batch's JSON."""

from __future__ import annotations

import datetime
import json
import signal
import time

import pytest
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty

from workers.supervisor import JobProcessSupervisor
from workers.supervisor.bookkeeping import CommandBatch, as_json
from workers.supervisor.slot import JobSlot
from workers.supervisor.soft_limit import SoftTimeLimit


def test_the_worker_runs_jobs_under_the_cheaper_soft_limit() -> None:
    assert JobProcessSupervisor.death_penalty_class is SoftTimeLimit


def _overrun(penalty_class: type[UnixSignalDeathPenalty]) -> str:
    with pytest.raises(JobTimeoutException) as raised:
        with penalty_class(1, JobTimeoutException, job_id="job"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                pass
    return str(raised.value)


def test_the_soft_limit_interrupts_a_job_with_rqs_exception_and_message() -> None:
    assert _overrun(SoftTimeLimit) == _overrun(UnixSignalDeathPenalty)
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL


def test_the_soft_limit_leaves_sigalrm_at_its_default_and_no_alarm_after_a_job() -> None:
    with SoftTimeLimit(30, JobTimeoutException, job_id="job"):
        assert signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        assert 0 < signal.alarm(30) <= 30  # the alarm is set (re-set to the same here)
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
    assert signal.alarm(0) == 0


def test_the_stop_flag_reads_as_the_whole_slot_does() -> None:
    slot = JobSlot()
    try:
        assert slot.stop_requested() is slot.read().stop_requested is False
        slot.begin("job", "execution", "analysis", 240.0, 300.0)
        assert slot.stop_requested() is False
        slot.request_stop()
        assert slot.stop_requested() is slot.read().stop_requested is True
        slot.end()
        assert slot.stop_requested() is slot.read().stop_requested is True
    finally:
        slot.close()


def test_a_batch_travels_as_the_same_json_as_json_dumps_wrote() -> None:
    commands = [
        ("HSET", "rq:job:1", "status", "finished", "result", b"2", "meta", '{"job_type":"test.add"}', "é"),
        ("ZADD", "rq:finished:analysis", 1796408234.123456, "1"),
        ("EXPIRE", "rq:job:1", 86400),
    ]
    written = as_json(commands)
    assert json.loads(written) == json.loads(json.dumps(commands, default=lambda value: value.decode()))


def test_text_that_is_not_utf8_still_travels_as_json_dumps_escapes_it() -> None:
    assert json.loads(as_json([("HSET", "k", "f", "bad \udc80 name")])) == [["HSET", "k", "f", "bad \udc80 name"]]


def test_a_batch_refuses_what_json_dumps_refused() -> None:
    batch = CommandBatch()
    batch.commands.append(("HSET", "k", "f", datetime.datetime(2026, 12, 3)))
    with pytest.raises(TypeError):
        batch.script_args()
    with pytest.raises(TypeError):
        as_json([("HSET", "k", "f", object())])
