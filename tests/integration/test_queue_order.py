"""The order a worker serving every queue takes jobs in: the Procfile's line takes them in turn
(`--dequeue-strategy round_robin`), so a flood on one queue cannot hold the others back; without
that option it is RQ's strict priority (measured on our worker class both ways)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.support.processes import ProcessGroup
from tests.support.procfile import procfile_command
from tests.support.stack import Stack, WorkerProcess
from tests.support.waiting import wait_until
from trustcard.connections import redis_client

pytestmark = pytest.mark.integration

FLOOD = 20


def start(stack: Stack, command: list[str]) -> WorkerProcess:
    log_path = stack.log_dir / f"worker-order-{len(stack.logs)}.log"
    stack.logs.append(log_path)
    group = ProcessGroup.start(log_path.stem, command, {**os.environ, **stack.env}, log_path)
    worker = WorkerProcess(group.name, group.process, group.log_path)
    stack.workers.append(worker)
    return worker


def without_dequeue_strategy(command: list[str]) -> list[str]:
    """The worker line with RQ's default dequeue strategy (strict priority by queue order)."""
    at = command.index("--dequeue-strategy")
    return command[:at] + command[at + 2:]


def flood_then_one(stack: Stack, command: list[str]) -> int:
    """FLOOD short jobs on `webhooks` (first in the order), one on `ingest` (last); start the
    worker; how many of the flood were still waiting when the `ingest` job ended."""
    connection = redis_client(stack.settings)
    try:
        webhooks = Queue("webhooks", connection=connection, serializer=JSONSerializer)
        ingest = Queue("ingest", connection=connection, serializer=JSONSerializer)
        for _ in range(FLOOD):
            webhooks.enqueue_call("workers.diagnostics.sleep", kwargs={"seconds": 0.1})
        last: Job = ingest.enqueue_call("workers.diagnostics.add", kwargs={"x": 1, "y": 2})
        start(stack, command).wait_registered(stack.settings)
        wait_until(lambda: last.get_status(refresh=True) == "finished", 30, "the ingest job")
        return webhooks.count
    finally:
        connection.close()


def test_the_procfile_worker_takes_its_queues_in_turn(make_stack: Callable[..., Stack]) -> None:
    assert flood_then_one(make_stack(), procfile_command("worker")) >= FLOOD - 3


def test_without_dequeue_strategy_the_queue_order_is_a_strict_priority(make_stack: Callable[..., Stack]) -> None:
    command = without_dequeue_strategy(procfile_command("worker"))
    assert flood_then_one(make_stack(), command) == 0  # the last queue waited for the whole flood
