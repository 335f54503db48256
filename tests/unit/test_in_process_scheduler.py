"""The scheduler the supervisor runs in its own loop (`workers.supervisor.scheduler`), on fakeredis."""

from __future__ import annotations

from datetime import timedelta

import fakeredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.exceptions import OutOfMemoryError
from redis.retry import Retry
from rq import Queue
from rq.registry import ScheduledJobRegistry

from tests.support.ports import free_port
from workers.supervisor import JobProcessSupervisor
from workers.supervisor.scheduler import LOCK_CHECK_SECONDS, InProcessScheduler, start_scheduler

LOCK_KEY = "rq:scheduler-lock:analysis"


def _scheduler_of(worker: JobProcessSupervisor) -> InProcessScheduler:
    start_scheduler(worker)
    assert isinstance(worker.scheduler, InProcessScheduler)
    return worker.scheduler


def test_starting_takes_the_lock_and_forks_nothing(worker: JobProcessSupervisor, fake_redis: fakeredis.FakeRedis) -> None:
    scheduler = _scheduler_of(worker)
    assert scheduler.acquired_locks == {"analysis"}
    assert fake_redis.get(LOCK_KEY) == scheduler.name.encode()
    assert scheduler._process is None  # no scheduler process


def test_a_round_moves_a_due_job_onto_its_queue(worker: JobProcessSupervisor, queue: Queue) -> None:
    scheduler = _scheduler_of(worker)
    job = queue.enqueue_in(timedelta(seconds=-1), "workers.diagnostics.add", x=1, y=2)
    assert job.id in ScheduledJobRegistry(queue=queue).get_job_ids()
    scheduler.tick(scheduler._next_round)
    assert queue.get_job_ids() == [job.id]


def test_a_round_is_not_repeated_within_the_interval(worker: JobProcessSupervisor, queue: Queue) -> None:
    scheduler = _scheduler_of(worker)
    due_at = scheduler._next_round
    job = queue.enqueue_in(timedelta(seconds=-1), "workers.diagnostics.add", x=1, y=2)
    scheduler.tick(due_at - 0.01)
    assert queue.get_job_ids() == []
    scheduler.tick(due_at)
    assert queue.get_job_ids() == [job.id]


def test_a_second_worker_waits_for_the_lock_and_takes_it_once_released(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    first = _scheduler_of(worker)
    other = JobProcessSupervisor([queue], connection=fake_redis)
    second = _scheduler_of(other)
    assert second.acquired_locks == set()
    worker.stop_scheduler()  # the first worker's teardown
    assert fake_redis.get(LOCK_KEY) is None
    assert first.acquired_locks == set()
    second.tick(second._next_round + LOCK_CHECK_SECONDS)
    assert second.acquired_locks == {"analysis"}
    assert fake_redis.get(LOCK_KEY) == second.name.encode()


def test_a_round_with_redis_down_waits_for_the_next(worker: JobProcessSupervisor, queue: Queue) -> None:
    scheduler = _scheduler_of(worker)
    working = scheduler._connection
    scheduler._connection = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))  # nothing listens
    scheduler.tick(scheduler._next_round)  # logged, not raised
    scheduler._connection = working
    job = queue.enqueue_in(timedelta(seconds=-1), "workers.diagnostics.add", x=1, y=2)
    scheduler.tick(scheduler._next_round)
    assert queue.get_job_ids() == [job.id]


def test_a_round_refused_by_a_full_redis_waits_for_the_next(worker: JobProcessSupervisor, queue: Queue,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of memory (`noeviction`) refuses the heartbeat's writes: the worker goes on."""
    scheduler = _scheduler_of(worker)

    def refused() -> None:
        raise OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")

    monkeypatch.setattr(scheduler, "heartbeat", refused)
    scheduler.tick(scheduler._next_round)  # logged, not raised
    monkeypatch.undo()
    job = queue.enqueue_in(timedelta(seconds=-1), "workers.diagnostics.add", x=1, y=2)
    scheduler.tick(scheduler._next_round)
    assert queue.get_job_ids() == [job.id]
