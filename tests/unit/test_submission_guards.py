"""Idempotency keys, the rate limit, the queue-depth cap and the retry endpoint, on fakeredis."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq.job import Job
from rq.serializers import JSONSerializer

from trustcard.api.app import create_app
from trustcard.config import load_settings
from trustcard.exceptions import ConfigError


def make_app(tmp_path: Path, redis: fakeredis.FakeRedis, **env: str) -> Flask:
    settings = load_settings({"DATABASE_URL": f"sqlite:///{tmp_path / 'guards.db'}", **env})
    return create_app(settings, redis=redis)


class TestIdempotencyKey:
    def test_same_key_returns_the_first_task(self, client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
        headers = {"Idempotency-Key": "order-42"}
        first = client.post("/tasks/test/add?x=1&y=2", headers=headers)
        second = client.post("/tasks/test/add?x=1&y=2", headers=headers)
        assert first.status_code == second.status_code == 202
        assert first.get_json()["task_id"] == second.get_json()["task_id"]
        assert "Idempotent-Replayed" not in first.headers and second.headers["Idempotent-Replayed"] == "true"
        assert fake_redis.llen("rq:queue:analysis") == 1

    def test_other_keys_and_no_key_enqueue_new_tasks(self, client: FlaskClient) -> None:
        ids = {
            client.post("/tasks/test/add?x=1&y=2", headers={"Idempotency-Key": "a"}).get_json()["task_id"],
            client.post("/tasks/test/add?x=1&y=2", headers={"Idempotency-Key": "b"}).get_json()["task_id"],
            client.post("/tasks/test/add?x=1&y=2").get_json()["task_id"],
            client.post("/tasks/test/add?x=1&y=2").get_json()["task_id"],
        }
        assert len(ids) == 4

    def test_key_reused_for_other_work_is_409(self, client: FlaskClient) -> None:
        client.post("/tasks/test/add?x=1&y=2", headers={"Idempotency-Key": "k"})
        reused = client.post("/tasks/test/add?x=5&y=2", headers={"Idempotency-Key": "k"})
        assert reused.status_code == 409 and reused.get_json()["error"] == "idempotency_key_reused"

    @pytest.mark.parametrize("key", ["", "   ", "k" * 256])
    def test_bad_key_is_400(self, client: FlaskClient, key: str) -> None:
        response = client.post("/tasks/test/add?x=1&y=2", headers={"Idempotency-Key": key})
        assert response.status_code == 400 and "Idempotency-Key" in response.get_json()["message"]

    def test_key_expires_with_the_result_lifetime(self, client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
        client.post("/tasks/test/add?x=1&y=2", headers={"Idempotency-Key": "ttl"})
        [key] = fake_redis.keys("trustcard:idempotency:*")
        assert 0 < fake_redis.ttl(key) <= 86_400


def test_rate_limit_zero_means_off(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    client = make_app(tmp_path, fake_redis, RATE_LIMIT_PER_MINUTE="0").test_client()
    answers = [client.post("/tasks/test/add?x=1&y=2") for _ in range(20)]
    assert {answer.status_code for answer in answers} == {202}
    assert all("RateLimit-Limit" not in answer.headers for answer in answers)


def test_full_queue_answers_503(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    client = make_app(tmp_path, fake_redis, MAX_QUEUE_DEPTH="2").test_client()
    answers = [client.post("/tasks/test/add?x=1&y=2").status_code for _ in range(3)]
    assert answers == [202, 202, 503]
    full = client.post("/tasks/test/add?x=1&y=2")
    assert full.get_json()["error"] == "queue_full" and full.headers["Retry-After"] == "30"
    assert fake_redis.llen("rq:queue:analysis") == 2


def test_full_queue_answers_503_with_rate_limit_per_minute_0(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    """With the limit off the admission script checks the depth and takes no token."""
    client = make_app(tmp_path, fake_redis, MAX_QUEUE_DEPTH="2", RATE_LIMIT_PER_MINUTE="0").test_client()
    answers = [client.post("/tasks/test/add?x=1&y=2").status_code for _ in range(3)]
    assert answers == [202, 202, 503]
    assert fake_redis.llen("rq:queue:analysis") == 2


def test_with_max_queue_depth_a_refused_keyed_submission_gives_its_key_back(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis
) -> None:
    """The depth is checked in the enqueue's own call, after the Idempotency-Key is claimed: a
    refusal releases the claim, so the client's retry under the same key is a new task, not a
    replay of one that never existed."""
    client = make_app(tmp_path, fake_redis, MAX_QUEUE_DEPTH="1").test_client()
    assert client.post("/tasks/test/add?x=1&y=2").status_code == 202
    headers = {"Idempotency-Key": "order-7"}
    refused = client.post("/tasks/test/add?x=1&y=2", headers=headers)
    assert (refused.status_code, refused.get_json()["error"]) == (503, "queue_full")
    assert not fake_redis.keys("trustcard:idempotency:*")
    fake_redis.lpop("rq:queue:analysis")  # a worker took the first one
    retried = client.post("/tasks/test/add?x=1&y=2", headers=headers)
    assert retried.status_code == 202 and "Idempotent-Replayed" not in retried.headers
    assert fake_redis.lrange("rq:queue:analysis", 0, -1) == [retried.get_json()["task_id"].encode()]


def test_full_queue_answers_503_for_each_queue_on_its_own(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    """MAX_QUEUE_DEPTH counts the queue the submission goes to, not another one."""
    client = make_app(tmp_path, fake_redis, MAX_QUEUE_DEPTH="2").test_client()
    fake_redis.rpush("rq:queue:models", "a", "b", "c")  # another queue, over the depth
    assert client.post("/tasks/test/add?x=1&y=2").status_code == 202


def test_production_refuses_debug_mode() -> None:
    with pytest.raises(ConfigError, match="^FLASK_DEBUG"):
        load_settings({"APP_ENV": "production", "SECRET_KEY": "s", "FLASK_DEBUG": "1"})
    assert load_settings({"APP_ENV": "production", "SECRET_KEY": "s", "FLASK_DEBUG": "0"}).is_production


class TestRetryEndpoint:
    def test_retry_a_cancelled_task_puts_it_back(self, client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
        task_id = client.post("/tasks/test/add?x=1&y=2").get_json()["task_id"]
        assert client.delete(f"/tasks/{task_id}").status_code == 200
        retried = client.post(f"/tasks/{task_id}/retry")
        assert retried.status_code == 202 and retried.get_json()["status"] == "pending"
        assert fake_redis.lrange("rq:queue:analysis", 0, -1) == [task_id.encode()]

    def test_retry_a_failed_task(self, client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
        task_id = client.post("/tasks/test/add?x=1&y=2").get_json()["task_id"]
        job = Job.fetch(task_id, connection=fake_redis, serializer=JSONSerializer)
        fake_redis.lrem("rq:queue:analysis", 0, task_id)
        with fake_redis.pipeline() as pipeline:
            job._handle_failure("ValueError: boom", pipeline)  # what a worker records
            job.set_status("failed", pipeline=pipeline)
            pipeline.execute()
        assert client.get(f"/tasks/{task_id}").get_json()["error"] == "ValueError: boom"
        assert client.post(f"/tasks/{task_id}/retry").status_code == 202
        assert client.get(f"/tasks/{task_id}").get_json()["status"] == "pending"

    def test_retry_a_waiting_task_is_409(self, client: FlaskClient) -> None:
        task_id = client.post("/tasks/test/add?x=1&y=2").get_json()["task_id"]
        response = client.post(f"/tasks/{task_id}/retry")
        assert response.status_code == 409 and response.get_json()["error"] == "task_not_retryable"

    def test_retry_unknown_is_404(self, client: FlaskClient) -> None:
        assert client.post("/tasks/unknown-id/retry").status_code == 404
