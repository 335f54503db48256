"""The supervisor's records when its job process dies between jobs, on fakeredis.

The integration tests kill real job processes; the moment between a job process taking a
job off its queue and starting it is too short to hit from outside, so this is tested here.
"""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
from rq import Queue
from rq.job import JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import JSONSerializer

from trustcard import failures, rq_seams

from workers.supervisor import JobProcessSupervisor
from workers.supervisor.deaths import MAX_DEATHS_BEFORE_START


@pytest.fixture
def queue(fake_redis: fakeredis.FakeRedis) -> Queue:
    return Queue("analysis", connection=fake_redis, serializer=JSONSerializer)


@pytest.fixture
def worker(queue: Queue, fake_redis: fakeredis.FakeRedis) -> Iterator[JobProcessSupervisor]:
    yield JobProcessSupervisor([queue], connection=fake_redis, serializer=JSONSerializer)


def taken_off_the_queue(queue: Queue, job_id: str) -> None:
    """What a job process's dequeue does: from the queue to its intermediate list."""
    connection = queue.connection
    assert connection.lrem(queue.key, 1, job_id) == 1
    connection.rpush(queue.intermediate_queue_key, job_id)


def test_a_job_taken_but_not_started_goes_back_to_the_front(worker: JobProcessSupervisor, queue: Queue) -> None:
    waiting = queue.enqueue_call("workers.diagnostics.add", kwargs={"x": 1, "y": 1})
    taken = queue.enqueue_call("workers.diagnostics.add", kwargs={"x": 2, "y": 2})
    taken_off_the_queue(queue, taken.id)
    worker._poison_pills.put_back(taken.id)
    assert queue.get_job_ids() == [taken.id, waiting.id]
    assert queue.connection.lrange(queue.intermediate_queue_key, 0, -1) == []
    assert taken.get_status(refresh=True) == JobStatus.QUEUED


def test_a_job_that_keeps_killing_its_job_process_is_failed_with_the_reason(worker: JobProcessSupervisor, queue: Queue) -> None:
    poison = queue.enqueue_call("workers.diagnostics.add", kwargs={"x": 1, "y": 1})
    for _ in range(MAX_DEATHS_BEFORE_START - 1):
        taken_off_the_queue(queue, poison.id)
        worker._poison_pills.put_back(poison.id)
        assert queue.get_job_ids() == [poison.id]
    taken_off_the_queue(queue, poison.id)
    worker._poison_pills.put_back(poison.id)
    assert queue.get_job_ids() == []
    assert queue.connection.lrange(queue.intermediate_queue_key, 0, -1) == []
    assert poison.get_status(refresh=True) == JobStatus.FAILED
    assert poison.id in FailedJobRegistry(queue=queue).get_job_ids()
    latest = poison.latest_result()
    assert latest is not None and latest.exc_string.startswith("JobProcessCrashed:")


def rolled_back_to_started(queue: Queue, worker_name: str) -> str:
    """A job as a failover can leave it: its start replicated, its end not (it reads started)."""
    job = queue.enqueue_call("workers.diagnostics.add", kwargs={"x": 1, "y": 1})
    taken_off_the_queue(queue, job.id)
    job.worker_name = worker_name
    job.save()
    job.set_status(JobStatus.STARTED)
    return job.id


def test_a_job_whose_end_a_failover_undid_is_failed_with_the_reason(worker: JobProcessSupervisor, queue: Queue) -> None:
    job_id = rolled_back_to_started(queue, worker.name)
    started = StartedJobRegistry(queue.name, connection=queue.connection, serializer=JSONSerializer)
    queue.connection.zadd(started.key, {f"{job_id}:execution-1": 2_000_000_000})
    assert worker.recover_after_failover() == []
    job = queue.fetch_job(job_id)
    assert job.get_status(refresh=True) == JobStatus.FAILED
    assert job.latest_result().exc_string == failures.REDIS_LOST.render()
    assert job_id in FailedJobRegistry(queue.name, connection=queue.connection, serializer=JSONSerializer)


def test_a_job_another_worker_runs_is_left_alone(worker: JobProcessSupervisor, queue: Queue) -> None:
    job_id = rolled_back_to_started(queue, "another-worker")
    started = StartedJobRegistry(queue.name, connection=queue.connection, serializer=JSONSerializer)
    queue.connection.zadd(started.key, {f"{job_id}:execution-1": 2_000_000_000})
    queue.connection.lrem(queue.intermediate_queue_key, 0, job_id)  # its start removed it there
    assert worker.recover_after_failover() == []
    assert queue.fetch_job(job_id).get_status(refresh=True) == JobStatus.STARTED


def test_a_job_whose_start_a_failover_undid_is_put_back_on_its_queue(
    worker: JobProcessSupervisor, queue: Queue
) -> None:
    job = queue.enqueue_call("workers.diagnostics.add", kwargs={"x": 1, "y": 1})
    taken_off_the_queue(queue, job.id)  # taken, then the failover lost its start: queued, in no queue
    [(found, found_queue)] = worker.recover_after_failover()
    assert found.id == job.id and found_queue is queue
    worker.put_back_if_still_taken(found, found_queue)
    assert queue.get_job_ids() == [job.id]
    assert queue.connection.lrange(queue.intermediate_queue_key, 0, -1) == []
    assert worker.recover_after_failover() == []  # on its queue: it simply runs again
    worker.put_back_if_still_taken(found, found_queue)  # a second worker's pass: not pushed twice
    assert queue.get_job_ids() == [job.id]


def test_the_job_process_puts_back_what_the_failover_pass_found_taken(
    worker: JobProcessSupervisor, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.supervisor import job_process
    from workers.supervisor.slot import JobSlot

    monkeypatch.setattr(job_process, "TAKEN_SETTLE_SECONDS", 0)
    job = queue.enqueue_call("workers.diagnostics.add", kwargs={"x": 1, "y": 1})
    taken_off_the_queue(queue, job.id)
    process = job_process.JobProcess(worker, JobSlot(), parent_pid=0, max_jobs=1, max_memory_mb=0, burst=True,
                                     max_idle_time=None)
    process._recheck_after_outage()
    assert queue.get_job_ids() == [job.id]
