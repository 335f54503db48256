"""A plain success's start and end go to Redis on one connection, one behind the other
(`Bookkeeper.run(after=...)`): the job process waits once per job, not twice. On fakeredis."""

from __future__ import annotations

import os

import pytest
from redis import Redis
from rq import Queue, get_current_job
from rq.job import JobStatus
from rq.registry import FinishedJobRegistry, StartedJobRegistry

from workers import job as catalogue_job
from workers.supervisor import JobProcessSupervisor
from workers.supervisor.bookkeeping import Bookkeeper
from workers.supervisor.job_process import JobProcess
from workers.supervisor.process import ExitCode
from workers.supervisor.slot import JobSlot

ADD = "workers.diagnostics.add"
FORGET_SCRIPTS = f"{__name__}.forget_scripts"


def forget_scripts() -> str:
    """A job during which Redis forgets its scripts (as a restart would)."""
    job = get_current_job()
    assert job is not None
    job.connection.script_flush()
    return "done"


def _run_burst(worker: JobProcessSupervisor) -> ExitCode:
    return JobProcess(worker, JobSlot(), parent_pid=os.getppid(), max_jobs=100, max_memory_mb=0, burst=True,
                      max_idle_time=None).loop()


def test_plain_successes_end_finished_with_their_start_recorded(worker: JobProcessSupervisor, queue: Queue,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[bool] = []
    original = Bookkeeper.run

    def run(self: Bookkeeper, *args: object, **kwargs: object) -> object:
        runs.append(len(args) > 3 and args[3] is not None or kwargs.get("after") is not None)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Bookkeeper, "run", run)
    jobs = [queue.enqueue_call(ADD, kwargs={"x": index, "y": 1}) for index in range(3)]
    assert _run_burst(worker) == ExitCode.EMPTY
    assert [job.return_value() for job in jobs] == [1, 2, 3]
    for job in jobs:
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED
        assert job.started_at is not None and job.ended_at is not None and job.started_at <= job.ended_at
    assert sorted(FinishedJobRegistry(queue=queue).get_job_ids()) == sorted(job.id for job in jobs)
    assert StartedJobRegistry(queue=queue).get_job_ids() == []
    assert runs.count(True) == 3, "each end went behind its start"


def test_a_redis_that_forgot_the_script_mid_job_still_records_the_end(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(catalogue_job.BY_FUNCTION, FORGET_SCRIPTS, catalogue_job.BY_FUNCTION[ADD])
    forgetful = queue.enqueue_call(FORGET_SCRIPTS)
    after = queue.enqueue_call(ADD, kwargs={"x": 2, "y": 2})
    assert _run_burst(worker) == ExitCode.EMPTY
    assert forgetful.get_status(refresh=True) == JobStatus.FINISHED
    assert forgetful.return_value() == "done"
    assert after.return_value() == 4
    assert StartedJobRegistry(queue=queue).get_job_ids() == []
