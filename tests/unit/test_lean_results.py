"""Plain successes stored lean (the result in the job hash, no result stream), and every
reader of results still finding them: RQ's `Job`/`Result` API (what rq-dashboard calls),
the status API, and the rule for jobs with both kinds of record. On fakeredis; the real
worker, gunicorn, the dashboard and `rq info` are in tests/integration/test_lean_results.py."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
import time

import fakeredis
import pytest
from flask.testing import FlaskClient
from rq import Queue
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

from tests.unit.test_worker_contract import ADD, run_burst
from tests.support.waiting import wait_until
from trustcard import job_results, task_events
from workers import job as catalogue_job
from workers.supervisor import JobProcessSupervisor

RAISE = f"{__name__}.raise_once"


def raise_once() -> None:
    raise RuntimeError("broken on purpose")


def test_a_plain_success_writes_no_result_stream_and_keeps_the_result_in_its_hash(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    job = queue.enqueue_call(ADD, kwargs={"x": 7, "y": 8}, meta={"job_type": "test.add", "hard_timeout": 300,
                                                                   "submitted_by": "127.0.0.1", "request_id": "ab" * 16})
    run_burst(worker)
    stored = fake_redis.hgetall(job.key)
    assert not fake_redis.exists(Result.get_key(job.id))
    assert stored[b"status"] == b"finished"
    assert stored[b"result"] == b"15"
    assert b"" not in stored.values(), "empty fields are left out"
    assert stored[b"last_heartbeat"] == stored[b"ended_at"]  # kept: see the heartbeat test below
    assert b"failure_ttl" not in stored
    assert json.loads(stored[b"meta"]) == {"job_type": "test.add", "submitted_by": "127.0.0.1"}
    assert b"request_id" not in stored  # in the job's log lines, with its id
    assert all(len(value) <= 64 for value in stored.values()), "every value fits Redis' listpack"
    assert 0 < fake_redis.ttl(job.key) <= 500  # RQ's result TTL still applies
    assert job.id in queue.finished_job_registry.get_job_ids()


def test_a_heartbeat_racing_the_end_does_not_delete_the_finished_task(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    """The supervisor heartbeats a job running over 2 s; one sent as the job process ends lands
    after the lean rewrite. RQ's heartbeat deletes the job when its HSET of `last_heartbeat`
    adds a field (its sign of a job deleted meanwhile, rq issue 1450): the rewrite must keep
    that field, or the finished task is deleted and answers 404 (found by scripts/chaos.py)."""
    job = queue.enqueue_call(ADD, kwargs={"x": 7, "y": 8})
    run_burst(worker)
    fetched = Job.fetch(job.id, connection=fake_redis, serializer=JSONSerializer)
    worker.birth_date = worker.birth_date or datetime.now(timezone.utc)  # as while it runs
    worker.heartbeat()
    worker.maintain_heartbeats(fetched, Execution("e" * 32, job.id, connection=fake_redis))
    assert fake_redis.hget(job.key, "status") == b"finished"
    assert fake_redis.hget(job.key, "result") == b"15"


def test_rqs_own_readers_find_a_lean_result(worker: JobProcessSupervisor, queue: Queue,
                                            fake_redis: fakeredis.FakeRedis) -> None:
    job = queue.enqueue_call(ADD, kwargs={"x": 1, "y": 2})
    run_burst(worker)
    fetched = Job.fetch(job.id, connection=fake_redis, serializer=JSONSerializer)  # as rq-dashboard does
    latest = fetched.latest_result()
    assert latest is not None and latest.type == Result.Type.SUCCESSFUL
    assert latest.return_value == 3
    assert latest.worker_name == fetched.worker_name
    assert latest.created_at == fetched.ended_at.replace(tzinfo=latest.created_at.tzinfo)
    assert fetched.return_value() == 3
    assert [result.return_value for result in fetched.results()] == [3]
    assert Result.count(fetched) == 1
    assert Result.fetch_latest(fetched, serializer=JSONSerializer, timeout=1).return_value == 3  # blocking: at once


def test_a_lean_none_result_reads_as_a_success_returning_none(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    """The field's presence marks a lean success, not a truthy value."""
    job = queue.enqueue_call(ADD, kwargs={"x": 0, "y": 0})
    run_burst(worker)
    fake_redis.hset(job.key, "result", "null")  # what a job returning None leaves
    latest = Job.fetch(job.id, connection=fake_redis, serializer=JSONSerializer).latest_result()
    assert latest is not None and latest.type == Result.Type.SUCCESSFUL and latest.return_value is None


def test_failures_still_keep_their_exc_info_in_rqs_stream(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(catalogue_job.BY_FUNCTION, RAISE, catalogue_job.BY_FUNCTION[ADD])
    job = queue.enqueue_call(RAISE)
    run_burst(worker)
    latest = Job.fetch(job.id, connection=fake_redis, serializer=JSONSerializer).latest_result()
    assert latest is not None and latest.type == Result.Type.FAILED
    assert "broken on purpose" in (latest.exc_string or "")
    assert fake_redis.exists(Result.get_key(job.id))


def test_a_success_after_a_failed_try_is_the_latest_and_both_are_listed(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    job = queue.enqueue_call(ADD, kwargs={"x": 2, "y": 2})
    Result.create_failure(job, ttl=500, exc_string="first try failed")  # an earlier try, RQ's way
    run_burst(worker)
    fetched = Job.fetch(job.id, connection=fake_redis, serializer=JSONSerializer)
    assert fetched.latest_result().type == Result.Type.SUCCESSFUL
    assert [result.type for result in fetched.results()] == [Result.Type.SUCCESSFUL, Result.Type.FAILED]
    assert Result.count(fetched) == 2


def test_a_streamed_success_wins_over_the_hash(fake_redis: fakeredis.FakeRedis, queue: Queue) -> None:
    """A job RQ's own success path recorded (a stream entry) reads as RQ wrote it."""
    job = queue.enqueue_call(ADD, kwargs={"x": 1, "y": 1})
    fake_redis.hset(job.key, mapping={"status": JobStatus.FINISHED.value, "result": "999"})
    Result.create(job, Result.Type.SUCCESSFUL, ttl=500, return_value=2)
    assert job_results.read_latest(job, JSONSerializer).return_value == 2


def test_a_job_not_finished_has_no_lean_result(fake_redis: fakeredis.FakeRedis, queue: Queue) -> None:
    job = queue.enqueue_call(ADD, kwargs={"x": 1, "y": 1})
    fake_redis.hset(job.key, "result", "2")  # e.g. requeued after a success: not finished now
    assert job_results.read_latest(job, JSONSerializer) is None


def test_waiting_for_a_result_wakes_at_the_lean_end(worker: JobProcessSupervisor, queue: Queue,
                                                    fake_redis: fakeredis.FakeRedis) -> None:
    """A blocking `latest_result(timeout)` is woken by the end our worker publishes (the
    job runs in the main thread: its soft limit is SIGALRM; the reader waits in another)."""
    job = queue.enqueue_call(ADD, kwargs={"x": 20, "y": 22})
    found: list[Result | None] = []
    reader = threading.Thread(target=lambda: found.append(
        Job.fetch(job.id, connection=fake_redis, serializer=JSONSerializer).latest_result(timeout=10)), daemon=True)
    began = time.monotonic()
    reader.start()
    wait_until(lambda: dict(fake_redis.pubsub_numsub(task_events.channel(job.id)))
               .get(task_events.channel(job.id).encode(), 0) > 0, 5, "the reader subscribed")
    run_burst(worker)
    reader.join(10)
    assert found and found[0] is not None and found[0].return_value == 42
    assert time.monotonic() - began < 5


def test_waiting_for_a_result_that_does_not_come_gives_none_after_the_timeout(
    fake_redis: fakeredis.FakeRedis, queue: Queue
) -> None:
    job_results.install()
    job = queue.enqueue_call(ADD, kwargs={"x": 1, "y": 1})
    began = time.monotonic()
    assert job.latest_result(timeout=1) is None
    assert time.monotonic() - began >= 1


def test_the_status_api_reads_a_lean_result(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    answer = client.post("/tasks/test/add?x=7&y=8")
    assert answer.status_code == 202
    task_id = answer.get_json()["task_id"]
    queue = Queue("analysis", connection=fake_redis, serializer=JSONSerializer)
    run_burst(JobProcessSupervisor([queue], connection=fake_redis))
    assert not fake_redis.exists(Result.get_key(task_id))
    view = client.get(f"/tasks/{task_id}").get_json()
    assert (view["status"], view["result"], view["name"], view["submitted_by"]) == ("completed", 15, "test.add",
                                                                                  "127.0.0.1")
    assert view["worker"] and view["ended_at"]


def test_install_points_rqs_readers_at_ours_and_uninstall_back() -> None:
    job_results.install()
    assert Result.fetch_latest.__func__ is job_results.fetch_latest  # type: ignore[attr-defined]
    job_results.uninstall()
    assert Result.fetch_latest.__func__ is not job_results.fetch_latest  # type: ignore[attr-defined]
    job_results.install()
