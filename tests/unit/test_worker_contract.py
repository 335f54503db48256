"""RQ's worker contract, kept by our worker: each a cause RQ's own test suite found, on fakeredis.

The job process's loop runs here in the test's own process (not forked), in burst mode,
so what it leaves in Redis can be read at once. The integration tests
(`tests/integration/test_worker_contract.py`) cover what needs a real `rq worker`.
"""

from __future__ import annotations

import os
import threading

import fakeredis
import pytest
from rq import Queue, get_current_job
from rq.job import JobStatus
from rq.suspension import suspend

from workers import job as catalogue_job
from workers.supervisor import JobProcessSupervisor
from workers.supervisor.job_process import JobProcess
from workers.supervisor.process import ExitCode
from workers.supervisor.slot import JobSlot

ADD = "workers.diagnostics.add"
CANCEL_MYSELF = f"{__name__}.cancel_myself"


def cancel_myself() -> str:
    """A job cancelled while it runs (as `job.cancel()` from elsewhere would)."""
    job = get_current_job()
    assert job is not None
    job.cancel()
    return "done anyway"


def job_process(worker: JobProcessSupervisor) -> JobProcess:
    return JobProcess(worker, JobSlot(), parent_pid=os.getppid(), max_jobs=100, max_memory_mb=0, burst=True,
                      max_idle_time=None)


def run_burst(worker: JobProcessSupervisor) -> ExitCode:
    """The job process's loop, in burst mode, in this process's main thread (the soft time
    limit is SIGALRM)."""
    return job_process(worker).loop()


def test_a_burst_worker_runs_the_dependents_its_jobs_release(worker: JobProcessSupervisor, queue: Queue) -> None:
    """Dependents are released in the success's own transaction, before the next job is
    taken: a burst worker finds them on its queue and runs them before it exits."""
    parent = queue.enqueue_call(ADD, kwargs={"x": 1, "y": 2})
    child = queue.enqueue_call(ADD, kwargs={"x": 3, "y": 4}, depends_on=parent)
    assert child.get_status(refresh=True) == JobStatus.DEFERRED
    assert run_burst(worker) == ExitCode.EMPTY
    assert parent.get_status(refresh=True) == JobStatus.FINISHED
    assert child.get_status(refresh=True) == JobStatus.FINISHED
    assert child.return_value() == 7


def test_a_parent_cancelled_while_running_keeps_its_dependents_deferred(
    worker: JobProcessSupervisor, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(catalogue_job.BY_FUNCTION, CANCEL_MYSELF, catalogue_job.BY_FUNCTION[ADD])
    parent = queue.enqueue_call(CANCEL_MYSELF)
    child = queue.enqueue_call(ADD, kwargs={"x": 3, "y": 4}, depends_on=parent)
    run_burst(worker)
    assert child.get_status(refresh=True) == JobStatus.DEFERRED
    assert queue.get_job_ids() == []


def test_a_suspended_burst_worker_exits_without_running_anything(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    waiting = queue.enqueue_call(ADD, kwargs={"x": 1, "y": 2})
    suspend(fake_redis)
    codes: list[ExitCode] = []  # in a thread: a loop that never ends fails the test, not hangs it
    thread = threading.Thread(target=lambda: codes.append(job_process(worker).loop()), daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "a suspended burst worker kept waiting"
    assert codes == [ExitCode.SUSPENDED]
    assert waiting.get_status(refresh=True) == JobStatus.QUEUED
    assert queue.get_job_ids() == [waiting.id]


def test_heartbeat_on_a_worker_that_never_registered(worker: JobProcessSupervisor,
                                                       fake_redis: fakeredis.FakeRedis) -> None:
    worker.heartbeat()
    assert fake_redis.hget(worker.key, "last_heartbeat") is not None
    assert fake_redis.ttl(worker.key) > 0


def test_get_current_job_returns_the_job_it_runs_without_fetching_it(
    worker: JobProcessSupervisor, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = queue.enqueue_call(ADD, kwargs={"x": 1, "y": 2})
    execution = worker.prepare_execution(job)
    monkeypatch.setattr(worker.job_class, "fetch", classmethod(lambda *_, **__: pytest.fail("fetched again")))
    assert worker.get_current_job() is execution._job
