"""When parts fail: Redis stops and comes back, workers are stopped or killed.

Every accepted task must end completed, failed with a reason, or cancelled, and the
API must say which; the API must answer quickly while a part is down.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest
import redis
from rq import Worker

from tests.support.processes import running
from tests.support.redis_server import PrivateRedis
from tests.support.stack import Stack
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


def timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def assert_every_endpoint_answers_503_quickly(stack: Stack, known: str) -> None:
    """Submit, health, read, cancel and list all answer 503 within 3 s, naming Redis."""
    for call in (
        lambda: stack.client.post("/tasks/test/add?x=1&y=1"),
        lambda: stack.client.get("/health"),
        lambda: stack.client.get(f"/tasks/{known}"),
        lambda: stack.client.delete(f"/tasks/{known}"),
        lambda: stack.client.get("/tasks/"),
    ):
        response, seconds = timed(call)
        assert seconds < 3, f"answered in {seconds:.1f} s"
        assert response.status_code == 503, response.get_json()
        body = response.get_json()
        assert body.get("error") == "queue_unavailable" or body.get("redis") == "unreachable", body


def test_redis_outage_answers_503_fast_and_everything_recovers(
    make_stack: Callable[..., Stack], private_redis: PrivateRedis
) -> None:
    stack = make_stack(redis_url=private_redis.url)
    worker = stack.start_worker()
    assert stack.wait_for(stack.submit("/tasks/test/add?x=1&y=1"))["result"] == 2
    known = stack.submit("/tasks/test/add?x=2&y=2")
    stack.wait_for(known)

    private_redis.stop()
    assert_every_endpoint_answers_503_quickly(stack, known)
    assert stack.client.get("/health").get_json()["failing"] == ["redis"]

    private_redis.start()  # empty: it kept nothing on disk
    health = wait_until(
        lambda: (answer := stack.client.get("/health")).status_code == 200 and answer.get_json()["workers"] >= 1 and answer,
        60,
        "the web and the worker to recover after Redis came back",
        interval=0.5,
    )
    assert health.get_json()["redis"] == "connected"
    assert worker.process.poll() is None, "the worker process must survive the outage"
    assert stack.wait_for(stack.submit("/tasks/test/add?x=3&y=4"))["result"] == 7
    # Stock RQ's scheduler process dies with the connection, and a delayed retry (test.fail
    # retries once, a second later) stays pending until it runs again, for 10 minutes.
    retried = stack.submit("/tasks/test/fail", json={"message": "after the outage"})
    assert stack.wait_for(retried, timeout=30)["status"] == "failed"


def test_redis_appendonly_keeps_accepted_tasks_across_a_restart(
    make_stack: Callable[..., Stack], private_redis: PrivateRedis
) -> None:
    private_redis.stop()
    private_redis.appendonly = True
    private_redis.start()
    stack = make_stack(redis_url=private_redis.url)
    accepted = [stack.submit("/tasks/test/add?x=1&y=1") for _ in range(20)]
    time.sleep(1.5)  # appendfsync everysec: a 202 older than a second is on disk
    private_redis.stop()
    private_redis.start()
    wait_until(lambda: stack.client.get("/health").status_code == 200, 30, "web to see Redis again", interval=0.5)
    assert {stack.task(task_id)["status"] for task_id in accepted} == {"pending"}
    stack.start_worker()
    assert {stack.wait_for(task_id)["result"] for task_id in accepted} == {2}


def test_without_persistence_a_restart_loses_tasks(make_stack: Callable[..., Stack], private_redis: PrivateRedis) -> None:
    stack = make_stack(redis_url=private_redis.url)
    accepted = stack.submit("/tasks/test/add?x=1&y=1")
    time.sleep(1.5)
    private_redis.stop()
    private_redis.start()
    wait_until(lambda: stack.client.get("/health").status_code == 200, 30, "web to see Redis again", interval=0.5)
    assert stack.client.get(f"/tasks/{accepted}").status_code == 404  # why production needs appendonly


def test_sigterm_hands_the_running_job_back_within_the_grace_period(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(WORKER_SHUTDOWN_GRACE="2")
    first = stack.start_worker()
    task_id = stack.submit("/tasks/test/sleep?seconds=20")
    stack.wait_for(task_id, ("started",))
    os.killpg(first.process.pid, signal.SIGTERM)  # a platform signals every process at a deploy
    assert first.process.wait(timeout=15) == 0
    assert "handed back to queue analysis" in first.log()
    assert first.log().count("shutdown grace over, handing it back") == 1, first.log()  # once, not once per tick
    assert stack.task(task_id)["status"] == "pending"  # back on its queue for the next worker
    connection = stack.app.extensions["trustcard.redis"]
    assert connection.lrange("rq:queue:analysis", 0, -1) == [task_id.encode()]
    assert Worker.count(connection=connection) == 0
    stack.start_worker()
    assert stack.wait_for(task_id, ("started",), timeout=15)["worker"]


def test_sigterm_lets_a_short_job_finish_and_takes_no_new_one(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(WORKER_SHUTDOWN_GRACE="20")
    worker = stack.start_worker()
    task_id = stack.submit("/tasks/test/sleep?seconds=2")
    stack.wait_for(task_id, ("started",))
    os.killpg(worker.process.pid, signal.SIGTERM)
    waiting = stack.submit("/tasks/test/add?x=1&y=1")
    worker.process.wait(timeout=15)
    assert stack.task(task_id)["result"] == "Slept for 2 seconds"
    assert stack.task(waiting)["status"] == "pending"


def test_a_worker_killed_outright_leaves_no_task_started_for_ever(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    worker = stack.start_worker()
    task_id = stack.submit("/tasks/test/sleep?seconds=300")
    stack.wait_for(task_id, ("started",))
    horse = wait_until(worker.horse, 5, "the job process to appear")
    # The machine dies: the worker's process group and the
    # job process, which RQ forks into a group of its own, all at once.
    os.killpg(worker.process.pid, signal.SIGKILL)
    os.kill(horse, signal.SIGKILL)
    killed_at = time.monotonic()
    # The worker is known gone once its key expires; the key's TTL is what that takes. Rather
    # than wait it out (a minute and a half), read it, then let Redis expire the key now.
    connection = stack.app.extensions["trustcard.redis"]
    worker_key = Worker.redis_worker_namespace_prefix + stack.task(task_id)["worker"]
    key_lives_for = connection.pttl(worker_key) / 1000
    assert 0 < key_lives_for < 120, f"the dead worker's key would live {key_lives_for} s more"
    assert stack.task(task_id)["status"] == "started"  # the worker is not known gone yet
    connection.pexpire(worker_key, 1)
    task = stack.wait_for(task_id, ("failed",), timeout=120)
    assert task["error"].startswith("Abandoned")
    assert key_lives_for + (time.monotonic() - killed_at) < 120


def test_when_only_the_worker_process_is_killed_its_job_process_goes_too(make_stack: Callable[..., Stack]) -> None:
    """SIGKILL to the worker alone (an OOM kill, a `kill -9` of its pid): its job process may
    not run on unsupervised, and it has no other child (the scheduler runs in the worker's
    own loop), so the scheduler locks it held expire with their TTL. (How the task then
    ends is `test_a_worker_killed_outright_leaves_no_task_started_for_ever`.)"""
    stack = make_stack()
    worker = stack.start_worker()
    connection = stack.app.extensions["trustcard.redis"]
    wait_until(lambda: connection.get("rq:scheduler-lock:analysis"), 10, "the worker to take the scheduler lock")
    task_id = stack.submit("/tasks/test/sleep?seconds=300")
    stack.wait_for(task_id, ("started",))
    children = worker.children()
    assert children == {worker.horse()}, f"the worker's only child is its job process, not {children}"
    os.kill(worker.process.pid, signal.SIGKILL)
    wait_until(lambda: not any(running(pid) for pid in children), 10, f"{children} to exit")
    lock_ttl = connection.pttl("rq:scheduler-lock:analysis") / 1000
    assert 0 < lock_ttl <= 61, f"the dead worker's scheduler lock would live {lock_ttl} s more"


def test_api_key_guards_the_task_endpoints(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(API_KEY="integration-key")
    stack.start_worker()
    assert stack.client.post("/tasks/test/add?x=1&y=1").status_code == 401
    assert stack.client.get("/tasks/").status_code == 401
    assert stack.client.get("/health").status_code == 200
    response = stack.client.post("/tasks/test/add?x=1&y=1", headers={"Authorization": "Bearer integration-key"})
    assert response.status_code == 202
    task_id = response.get_json()["task_id"]
    done = wait_until(
        lambda: (body := stack.client.get(f"/tasks/{task_id}", headers={"Authorization": "Bearer integration-key"}).get_json())[
            "status"
        ]
        == "completed"
        and body,
        30,
        "the keyed task to complete",
    )
    assert done["result"] == 2


def test_redis_refusing_connections_is_a_quick_503(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(redis_url="redis://127.0.0.1:1/0")
    response, seconds = timed(lambda: stack.client.post("/tasks/test/add?x=1&y=1"))
    assert response.status_code == 503 and seconds < 3


@pytest.mark.timeout(240)  # a 30 s outage, then up to 90 s of recovery
def test_thirty_seconds_without_redis_loses_nothing_accepted(
    make_stack: Callable[..., Stack], private_redis: PrivateRedis
) -> None:
    """Jobs running and more submitted while Redis is down for 30 s: every 202 ends in an
    answer once Redis (with its append-only file) is back, and no 202 was given meanwhile."""
    private_redis.stop()
    private_redis.appendonly = True
    private_redis.start()
    stack = make_stack(redis_url=private_redis.url)
    worker = stack.start_worker()
    accepted = [stack.submit("/tasks/test/sleep?seconds=0.5") for _ in range(8)]
    stack.wait_for(accepted[0], ("started", "completed"))
    time.sleep(1.2)  # appendfsync everysec

    private_redis.stop()
    outage_ends = time.monotonic() + 30
    refused = 0
    while time.monotonic() < outage_ends:
        response = stack.client.post("/tasks/test/add?x=1&y=1")
        assert response.status_code == 503, response.get_json()  # never a 202 Redis did not store
        refused += 1
        time.sleep(1)
    private_redis.start()

    endings = {stack.wait_for(task_id, timeout=90)["status"] for task_id in accepted}
    assert endings <= {"completed", "failed"}
    for task_id in accepted:
        task = stack.task(task_id)
        assert task["status"] == "completed" or task["error"], task  # a failure says why
    assert sum(stack.task(task_id)["status"] == "completed" for task_id in accepted) >= len(accepted) - 1
    assert worker.process.poll() is None, "the worker must carry on by itself"
    assert refused >= 20
    assert stack.wait_for(stack.submit("/tasks/test/add?x=2&y=3"))["result"] == 5


def test_a_frozen_redis_still_gets_answers_within_three_seconds(
    make_stack: Callable[..., Stack], private_redis: PrivateRedis
) -> None:
    """Redis accepts connections but never replies (hung, or cut off mid-stream)."""
    stack = make_stack(redis_url=private_redis.url)
    known = stack.submit("/tasks/test/add?x=1&y=1")
    assert private_redis.process is not None
    os.kill(private_redis.process.pid, signal.SIGSTOP)
    try:
        assert_every_endpoint_answers_503_quickly(stack, known)
    finally:
        os.kill(private_redis.process.pid, signal.SIGCONT)


def oom_refusals(client: redis.Redis) -> int:
    """How many commands Redis has refused for want of memory."""
    return int(client.info("errorstats").get("errorstat_OOM", {}).get("count", 0))


def test_redis_out_of_memory_refuses_submissions_with_503_and_recovers(
    make_stack: Callable[..., Stack], private_redis: PrivateRedis
) -> None:
    """Production Redis runs `noeviction`: at `maxmemory` it refuses writes, not reads.
    Submissions and cancels get a 503 naming the cause, reads still answer, the worker
    rides it out, and nothing half-written is left behind."""
    stack = make_stack(redis_url=private_redis.url)
    worker = stack.start_worker()
    known = stack.submit("/tasks/test/add?x=1&y=1")
    assert stack.wait_for(known)["result"] == 2
    admin = redis.Redis.from_url(private_redis.url)
    try:
        jobs_before = set(admin.scan_iter("rq:job:*"))
        admin.config_set("maxmemory", max(1, int(admin.info("memory")["used_memory"]) // 2))
        try:
            for _ in range(3):
                refused = stack.client.post("/tasks/test/add?x=1&y=1")
                assert refused.status_code == 503, refused.get_json()
                body = refused.get_json()
                assert body["error"] == "queue_unavailable" and "out of memory" in body["message"], body
            assert stack.client.get(f"/tasks/{known}").get_json()["result"] == 2  # reads still work
            assert set(admin.scan_iter("rq:job:*")) == jobs_before, "a refused submission left a job behind"
            refusals = oom_refusals(admin)
            wait_until(lambda: oom_refusals(admin) > refusals, 60, "the worker to be refused a write (a heartbeat)")
            # The idle job process's next take (a blocking BLMOVE, or the take script) is a
            # write too: it waits, probing with a write, instead of crashing (found by CI,
            # when the take came right after maxmemory was set).
            wait_until(lambda: "job process: Redis unavailable" in worker.log(), 30,
                       "the job process to be refused its take, and to say so")
        finally:
            admin.config_set("maxmemory", 0)
        assert worker.process.poll() is None, worker.log()
        assert stack.wait_for(stack.submit("/tasks/test/add?x=2&y=3"))["result"] == 5
        log = worker.log()
        assert "Redis takes writes again" in log and "crashed" not in log, log
    finally:
        admin.close()
