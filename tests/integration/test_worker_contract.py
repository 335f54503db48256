"""RQ's worker contract, kept by the Procfile's worker: what needs a real `rq worker` or fork.

Each test is a cause RQ's own test suite found: a worker waiting for its first job shows
idle; an idle worker obeys a shutdown command within moments; a warm shutdown's date is
written to Redis; `work()` counts the jobs of each call on its own.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from rq import Queue, Worker
from rq.command import send_shutdown_command
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from workers.supervisor import JobProcessSupervisor

SHUTDOWN_WITHIN_SECONDS = 0.3
"""An idle job process's exit after a shutdown command; RQ's own worker stops waiting
within about 10 ms, ours used to take up to 1 s (the job process's blocking wait)."""


def worker_of(connection: redis.Redis, pid: int) -> Worker | None:
    return next((w for w in Worker.all(connection=connection, serializer=JSONSerializer) if w.pid == pid), None)


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def blocked_clients(connection: redis.Redis) -> int:
    return int(connection.info("clients")["blocked_clients"])


def test_a_worker_waiting_for_its_first_job_reads_idle(make_stack: Callable[..., Any],
                                                       clean_redis: redis.Redis) -> None:
    worker = make_stack().start_worker()
    wait_for(lambda: (w := worker_of(clean_redis, worker.process.pid)) and w.get_state() == WorkerStatus.IDLE,
             10, "the worker to read idle")


def test_an_idle_worker_obeys_a_shutdown_command_within_moments(make_stack: Callable[..., Any],
                                                                clean_redis: redis.Redis) -> None:
    stack = make_stack()
    for _ in range(3):  # three rounds: one quick exit could be luck with a 1 s wait
        worker = stack.start_worker()
        found = wait_for(lambda: worker_of(clean_redis, worker.process.pid), 10, "the worker to register")
        job_process = wait_for(worker.horse, 10, "its job process")
        wait_for(lambda: blocked_clients(clean_redis), 10, "the job process to wait for work")
        sent = time.monotonic()
        send_shutdown_command(clean_redis, found.name)
        # The job process: the worker itself then releases its scheduler locks and deregisters.
        wait_for(lambda: not os.path.exists(f"/proc/{job_process}"), 10, "the job process to end")
        took = time.monotonic() - sent
        assert took < SHUTDOWN_WITHIN_SECONDS, f"an idle worker's job process took {took:.2f} s to stop"
        worker.process.wait(10)


def test_a_warm_shutdown_writes_its_date(make_stack: Callable[..., Any], clean_redis: redis.Redis) -> None:
    stack = make_stack()
    worker = stack.start_worker()
    task_id = stack.submit("/tasks/test/sleep?seconds=1")
    stack.wait_for(task_id, ("started",), timeout=15)
    found = worker_of(clean_redis, worker.process.pid)
    assert found is not None
    os.kill(worker.process.pid, signal.SIGTERM)
    worker.process.wait(20)
    assert stack.task(task_id)["status"] == "completed"  # warm: the job finished first
    assert clean_redis.hget(found.key, "shutdown_requested_date") is not None


@pytest.fixture
def own_signals() -> Iterator[None]:
    """`work()` in this process installs its signal handlers and wakeup fd: put them back."""
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
        signal.set_wakeup_fd(-1)


def test_work_counts_the_jobs_of_each_call(clean_redis: redis.Redis, own_signals: None) -> None:
    queue = Queue("analysis", connection=clean_redis, serializer=JSONSerializer)
    for number in range(3):
        queue.enqueue_call("workers.diagnostics.add", kwargs={"x": number, "y": 1})
    worker = JobProcessSupervisor([queue], connection=clean_redis)
    assert worker.work(burst=True, max_jobs=2) is True
    assert queue.count == 1
    assert worker.work(burst=True, max_jobs=2) is True  # this call's one job, not the first call's two
    assert queue.count == 0
    assert worker.work(burst=True, max_jobs=2) is False  # nothing left: this call ran nothing
