"""A job taken off a queue and never started is put back, and runs once: on fakeredis.

The Procfile's worker serves several queues. RQ keeps a taken job in an intermediate list only
for one queue, so a worker killed (or a failover that kept the take and lost the start) between
taking a job and starting it left the job reading `queued` on no queue, pending for ever.
"""

from __future__ import annotations

import os

import fakeredis
import pytest
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from workers.supervisor import JobProcessSupervisor
from workers.supervisor.abandoned import TAKEN_GRACE_SECONDS, put_back_taken, settle_abandoned
from workers.supervisor.bookkeeping import Bookkeeper, Dequeued
from workers.supervisor.job_process import JobProcess
from workers.supervisor.process import ExitCode
from workers.supervisor.slot import JobSlot

ADD = "workers.diagnostics.add"


@pytest.fixture
def queues(fake_redis: fakeredis.FakeRedis) -> list[Queue]:
    # fakeredis answers no INFO, so RQ reads it as Redis 5.0.9 (no LMOVE): say 7.2, as deployed.
    setattr(fake_redis, "__rq_redis_server_version", (7, 2, 0))  # noqa: B010 - RQ's cache of the version
    return [Queue(name, connection=fake_redis, serializer=JSONSerializer) for name in ("webhooks", "analysis")]


@pytest.fixture
def worker(queues: list[Queue], fake_redis: fakeredis.FakeRedis) -> JobProcessSupervisor:
    return JobProcessSupervisor(queues, connection=fake_redis, serializer=JSONSerializer)


def _take(worker: JobProcessSupervisor, queues: list[Queue]) -> Dequeued:
    book = Bookkeeper(worker.connection, queues, worker.job_class, worker.serializer)
    found = book.run(None, queues)
    assert isinstance(found, Dequeued)
    return found


def test_a_worker_on_several_queues_keeps_what_it_took_in_the_intermediate_list(
    worker: JobProcessSupervisor, queues: list[Queue]
) -> None:
    job = queues[1].enqueue_call(ADD, kwargs={"x": 1, "y": 2})
    found = _take(worker, queues)  # then its worker is killed before the start
    assert found.job.id == job.id
    assert queues[1].get_job_ids() == []
    assert worker.connection.lrange(queues[1].intermediate_queue_key, 0, -1) == [job.id.encode()]


def test_a_job_taken_and_never_started_goes_back_after_the_grace_and_runs_once(
    worker: JobProcessSupervisor, queues: list[Queue]
) -> None:
    job = queues[1].enqueue_call(ADD, kwargs={"x": 1, "y": 2})
    _take(worker, queues)
    seen: dict[str, float] = {}
    assert put_back_taken(worker, queues[1], seen, moment=100.0) == []  # a moment ago: its taker may start it
    assert put_back_taken(worker, queues[1], seen, moment=100.0 + TAKEN_GRACE_SECONDS / 2) == []
    assert put_back_taken(worker, queues[1], seen, moment=100.0 + TAKEN_GRACE_SECONDS) == [job.id]
    assert queues[1].get_job_ids() == [job.id]
    assert worker.connection.llen(queues[1].intermediate_queue_key) == 0
    assert seen == {}
    process = JobProcess(worker, JobSlot(), parent_pid=os.getppid(), max_jobs=10, max_memory_mb=0, burst=True,
                         max_idle_time=None)
    assert process.loop() == ExitCode.EMPTY
    assert job.get_status(refresh=True) == JobStatus.FINISHED and job.return_value() == 3


def _taken_and_seen(worker: JobProcessSupervisor, queues: list[Queue]) -> tuple[Job, dict[str, float]]:
    """A job taken off the first queue and not started, as the taken-job check first sees it."""
    job = queues[0].enqueue_call(ADD, kwargs={"x": 2, "y": 2})
    _take(worker, queues)
    seen: dict[str, float] = {}
    put_back_taken(worker, queues[0], seen, moment=0.0)
    return job, seen


def test_a_copy_put_back_of_a_job_its_taker_then_started_is_skipped(
    worker: JobProcessSupervisor, queues: list[Queue]
) -> None:
    job, seen = _taken_and_seen(worker, queues)
    assert put_back_taken(worker, queues[0], seen, moment=TAKEN_GRACE_SECONDS) == [job.id]  # its taker was slow
    worker.connection.hset(job.key, "status", JobStatus.FINISHED.value)  # ... and ran it meanwhile
    book = Bookkeeper(worker.connection, queues, worker.job_class, worker.serializer)
    assert book.run(None, queues) is None  # the copy is not run again
    assert queues[0].get_job_ids() == []
    assert worker.connection.llen(queues[0].intermediate_queue_key) == 0


def test_a_job_started_meanwhile_only_leaves_the_intermediate_list(
    worker: JobProcessSupervisor, queues: list[Queue]
) -> None:
    job, seen = _taken_and_seen(worker, queues)
    worker.connection.hset(job.key, "status", JobStatus.STARTED.value)
    assert put_back_taken(worker, queues[0], seen, moment=TAKEN_GRACE_SECONDS) == []
    assert queues[0].get_job_ids() == []
    assert worker.connection.llen(queues[0].intermediate_queue_key) == 0


def test_the_supervisors_periodic_check_puts_back_taken_jobs(
    worker: JobProcessSupervisor, queues: list[Queue], monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.supervisor import abandoned

    job = queues[1].enqueue_call(ADD, kwargs={"x": 1, "y": 1})
    _take(worker, queues)
    monkeypatch.setattr(abandoned, "TAKEN_GRACE_SECONDS", 0.0)
    assert settle_abandoned(worker, worker._taken_seen) == ["webhooks", "analysis"]
    assert queues[1].get_job_ids() == [job.id]
