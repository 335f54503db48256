"""POST /tasks/batch through gunicorn from the Procfile's `web:` line, with a real `rq worker`
from its `worker:` line on a real Redis: all or nothing, order, idempotency, the rate
limit by task, and a 1,000-task batch that ends completed, every task with its result."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from tests.support.http_connection import KeepAliveConnection
from tests.support.stack import Stack, WebProcess
from tests.support.waiting import wait_until
from trustcard.task_batch import MAX_BATCH_TASKS

pytestmark = pytest.mark.integration

QUEUE = "rq:queue:analysis"


def adds(count: int, start: int = 0) -> dict[str, Any]:
    return {"tasks": [{"type": "test.add", "params": {"x": i, "y": 2 * i}} for i in range(start, start + count)]}


@pytest.fixture
def http(web_and_worker: tuple[Stack, WebProcess]) -> Iterator[KeepAliveConnection]:
    """A keep-alive connection to the module's gunicorn (its worker idle, its queues empty)."""
    connection = KeepAliveConnection("127.0.0.1", web_and_worker[1].port)
    yield connection
    connection.close()


@pytest.fixture
def stack_redis(web_and_worker: tuple[Stack, WebProcess]) -> redis.Redis:
    client: redis.Redis = web_and_worker[0].app.extensions["trustcard.redis"]
    return client


def test_a_batch_of_1000_ends_completed_in_order_each_task_with_its_result(
    http: KeepAliveConnection, stack_redis: redis.Redis
) -> None:
    status, answer = http.request_json("POST", "/tasks/batch", adds(MAX_BATCH_TASKS))
    assert status == 202, answer
    ids = [task["task_id"] for task in answer["tasks"]]
    assert len(set(ids)) == MAX_BATCH_TASKS and {task["name"] for task in answer["tasks"]} == {"test.add"}

    def ended() -> bool:
        return stack_redis.llen(QUEUE) == 0 and http.request_json("GET", f"/tasks/{ids[-1]}")[1]["status"] != "pending"

    wait_until(ended, 180, "the worker to take all 1,000 tasks")
    views = [wait_until(lambda i=task_id: _ended(http, i), 60, f"task {task_id} to end") for task_id in ids]
    assert [view["status"] for view in views] == ["completed"] * MAX_BATCH_TASKS
    assert [view["result"] for view in views] == [3 * i for i in range(MAX_BATCH_TASKS)]
    started = [view["started_at"] for view in views]
    assert started == sorted(started)  # one worker took them in the order given


def _ended(http: KeepAliveConnection, task_id: str) -> dict[str, Any] | None:
    status, view = http.request_json("GET", f"/tasks/{task_id}")
    assert status == 200, view
    return view if view["status"] in ("completed", "failed", "cancelled") else None


def test_one_bad_task_refuses_the_batch_and_nothing_is_queued(
    http: KeepAliveConnection, stack_redis: redis.Redis
) -> None:
    jobs_before = len(stack_redis.keys("rq:job:*"))
    body = adds(10)
    body["tasks"][7]["params"]["x"] = "seven"
    status, answer = http.request_json("POST", "/tasks/batch", body)
    assert status == 422, answer
    assert answer["error"] == "validation_error"
    assert answer["problems"] == [{"parameter": "tasks[7].params.x", "problem": "must be a number"}]
    assert len(stack_redis.keys("rq:job:*")) == jobs_before and stack_redis.llen(QUEUE) == 0


def test_idempotency_key_covers_the_batch(http: KeepAliveConnection, stack_redis: redis.Redis) -> None:
    key = {"Idempotency-Key": "integration-batch"}
    jobs_before = len(stack_redis.keys("rq:job:*"))
    first_status, first = http.request_json("POST", "/tasks/batch", adds(5), key)
    again_status, again = http.request_json("POST", "/tasks/batch", adds(5), key)
    assert first_status == again_status == 202
    assert [task["task_id"] for task in again["tasks"]] == [task["task_id"] for task in first["tasks"]]
    other_status, other = http.request_json("POST", "/tasks/batch", adds(5, start=1), key)
    assert other_status == 409 and other["error"] == "idempotency_key_reused"
    assert len(stack_redis.keys("rq:job:*")) == jobs_before + 5
    for task in first["tasks"]:
        assert wait_until(lambda i=task["task_id"]: _ended(http, i), 60, "the batch to end")["status"] == "completed"


def test_rate_limit_per_minute_setting_counts_each_task_of_a_batch(
    make_stack: Callable[..., Stack], start_web: Callable[[dict[str, str]], WebProcess], clean_redis: redis.Redis
) -> None:
    """RATE_LIMIT_PER_MINUTE=1 (nothing refills during the test), the default burst of 2,000:
    two batches of 1,000 take every token, so a third task is refused, and with it the
    whole batch. No worker: the tasks wait on the queue."""
    stack = make_stack(RATE_LIMIT_PER_MINUTE="1")
    web = start_web(stack.env)
    connection = KeepAliveConnection("127.0.0.1", web.port)
    try:
        for start in (0, MAX_BATCH_TASKS):
            status, answer = connection.request_json("POST", "/tasks/batch", adds(MAX_BATCH_TASKS, start))
            assert status == 202, answer
        status, answer = connection.request_json("POST", "/tasks/batch", adds(2))
        assert status == 429 and answer["error"] == "rate_limited", answer
        assert connection.retry_after >= 60  # a minute per token, two tokens short
        assert connection.request_json("POST", "/tasks/test/add?x=1&y=1")[0] == 429  # one bucket for both
        assert clean_redis.llen(QUEUE) == 2 * MAX_BATCH_TASKS
    finally:
        connection.close()
