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
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

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
