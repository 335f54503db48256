"""POST /tasks/batch on fakeredis: all or nothing, order, round trips, idempotency, the rate
limit and the queue-depth cap by task, /metrics by task."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import ValidationError
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.unit.test_api import RoundTrips
from trustcard.api.app import create_app
from trustcard.api.batch_schemas import BatchRequest
from trustcard.config import load_settings
from trustcard.exceptions import ValidationFailed
from trustcard.metrics.store import SUBMISSIONS_KEY
from trustcard.task_batch import MAX_BATCH_TASKS, validate_batch

QUEUE = "rq:queue:analysis"
TIGHT_LIMIT = {"RATE_LIMIT_PER_MINUTE": "1"}
"""One token a minute: nothing refills while a test runs."""


def make_app(tmp_path: Path, redis: fakeredis.FakeRedis, **env: str) -> Flask:
    settings = load_settings({"DATABASE_URL": f"sqlite:///{tmp_path / 'batch.db'}", **env})
    return create_app(settings, redis=redis)


def adds(count: int, start: int = 0) -> dict[str, Any]:
    return {"tasks": [{"type": "test.add", "params": {"x": i, "y": 1}} for i in range(start, start + count)]}


def post_batch(client: FlaskClient, body: Any, **kwargs: Any) -> Any:
    return client.post("/tasks/batch", json=body, **kwargs)


def queued_ids(redis: fakeredis.FakeRedis) -> list[str]:
    return [raw.decode() for raw in redis.lrange(QUEUE, 0, -1)]


def test_batch_answers_202_with_each_task_as_get_reads_it_in_the_order_given(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    body = {"tasks": [
        {"type": "test.add", "params": {"x": 7, "y": 8}},
        {"type": "test.long"},
        {"type": "test.sleep", "params": {"seconds": "2"}},
        {"type": "analysis.process_post", "params": {"url": "https://www.instagram.com/p/ABC123/"}},
        {"type": "test.add", "params": {"x": 1.5, "y": 1}},
    ]}
    answer = post_batch(client, body)
    assert answer.status_code == 202, answer.get_json()
    tasks = answer.get_json()["tasks"]
    assert [task["name"] for task in tasks] == [task["type"] for task in body["tasks"]]
    assert {task["status"] for task in tasks} == {"pending"}
    for task in tasks:
        assert client.get(f"/tasks/{task['task_id']}").get_json() == task
    assert queued_ids(fake_redis) == [task["task_id"] for task in tasks]  # queued in the order given
    function, _, _, kwargs = json.loads(zlib.decompress(fake_redis.hget(f"rq:job:{tasks[2]['task_id']}", "data")))
    assert function == "workers.diagnostics.sleep" and kwargs == {"seconds": 2}  # checked as a single one is


def test_batch_jobs_carry_the_same_limits_and_meta_as_single_submissions(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    single = client.post("/tasks/test/fail", json={"message": "m"}).get_json()["task_id"]
    [batched] = post_batch(client, {"tasks": [{"type": "test.fail", "params": {"message": "m"}}]}).get_json()["tasks"]
    one, other = (Job.fetch(i, connection=fake_redis, serializer=JSONSerializer) for i in (single, batched["task_id"]))
    assert (other.func_name, other.kwargs, other.timeout, other.result_ttl, other.failure_ttl, other.retries_left) == (
        one.func_name, one.kwargs, one.timeout, one.result_ttl, one.failure_ttl, one.retries_left
    )
    assert {k: v for k, v in other.meta.items() if k != "request_id"} == {
        k: v for k, v in one.meta.items() if k != "request_id"
    }


def test_one_bad_task_refuses_the_whole_batch_naming_its_index_and_parameter(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    body = adds(5)
    body["tasks"][3]["params"] = {"x": 1}
    answer = post_batch(client, body)
    assert answer.status_code == 422
    error = answer.get_json()
    assert error["error"] == "validation_error"
    assert error["problems"] == [{"parameter": "tasks[3].params.y", "problem": "is required"}]
    assert "tasks[3].params.y is required" in error["message"]
    assert fake_redis.llen(QUEUE) == 0 and not fake_redis.keys("rq:job:*")
    assert "RateLimit-Remaining" not in answer.headers  # refused before any token was taken


def test_every_bad_task_is_named(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    body = {"tasks": [
        {"type": "test.add", "params": {"x": 1, "y": 2}},
        {"type": "test.nope"},
        "test.add",
        {"type": "test.sleep", "params": {"seconds": 4000}, "extra": 1},
        {"type": "test.add", "params": [1, 2]},
        {"params": {}},
        {"type": "webhooks.deliver"},  # internal: clients cannot submit it
        {"type": "test/add", "params": {"x": 1, "y": 2}},
    ]}
    problems = post_batch(client, body).get_json()["problems"]
    assert [p["parameter"] for p in problems] == [
        "tasks[1].type", "tasks[2]", "tasks[3].extra", "tasks[4].params", "tasks[5].type", "tasks[6].type",
        "tasks[7].type",
    ]
    assert fake_redis.llen(QUEUE) == 0


def test_a_bad_parameter_value_is_named_like_the_single_submission_names_it(client: FlaskClient) -> None:
    single = client.post("/tasks/test/sleep?seconds=4000").get_json()["problems"]
    batch = post_batch(client, {"tasks": [{"type": "test.sleep", "params": {"seconds": 4000}}]}).get_json()["problems"]
    assert batch == [{**problem, "parameter": f"tasks[0].params.{problem['parameter']}"} for problem in single]


@pytest.mark.parametrize(
    ("body", "status", "parameter"),
    [
        ({}, 422, "tasks"),
        ({"tasks": []}, 422, "tasks"),
        ({"tasks": {"type": "test.add"}}, 422, "tasks"),
        (adds(MAX_BATCH_TASKS + 1), 422, "tasks"),
        ({"tasks": [{"type": "test.long"}], "priority": 1}, 422, "priority"),
        ([{"type": "test.long"}], 400, None),
        ("tasks", 400, None),
    ],
)
def test_wrong_body_shapes_get_a_clear_error(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, body: Any, status: int, parameter: str | None
) -> None:
    answer = post_batch(client, body)
    assert answer.status_code == status, answer.get_json()
    error = answer.get_json()
    assert error["message"]
    if parameter is not None:
        assert error["problems"][0]["parameter"] == parameter
    assert fake_redis.llen(QUEUE) == 0


def test_a_body_that_is_not_json_is_400(client: FlaskClient) -> None:
    assert client.post("/tasks/batch", data="tasks=1", content_type="text/plain").status_code == 400
    assert client.post("/tasks/batch", data="{", content_type="application/json").status_code == 400
    assert client.post("/tasks/batch").get_json()["problems"][0]["parameter"] == "tasks"  # no body at all: 422


def test_the_largest_batch_is_accepted(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    answer = post_batch(client, adds(MAX_BATCH_TASKS))
    assert answer.status_code == 202
    ids = [task["task_id"] for task in answer.get_json()["tasks"]]
    assert len(set(ids)) == MAX_BATCH_TASKS and queued_ids(fake_redis) == ids


def test_other_methods_at_the_batch_path_are_405(client: FlaskClient) -> None:
    for method in ("get", "delete"):
        answer = getattr(client, method)("/tasks/batch")
        assert answer.status_code == 405 and answer.headers["Allow"] == "POST"


def test_a_batch_is_three_redis_round_trips_whatever_its_size(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rate-limit script (taking one token per task), the queue-depth check, and one
    transaction for every job with their count for /metrics."""
    post_batch(client, adds(1))  # the first one also learns Redis's version
    round_trips = RoundTrips(monkeypatch, fake_redis)
    for size in (1, 10, 500):
        round_trips.count = 0
        with post_batch(client, adds(size)) as answer:
            assert answer.status_code == 202
        assert round_trips.count == 3, size
    assert fake_redis.llen(QUEUE) == 512


def test_a_bad_batch_costs_no_redis_round_trip(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    round_trips = RoundTrips(monkeypatch, fake_redis)
    with post_batch(client, {"tasks": [{"type": "test.add"}]}) as answer:
        assert answer.status_code == 422
    assert round_trips.count == 1  # only the refusal's count for /metrics, once the answer is sent


class TestIdempotencyKey:
    def test_same_key_and_body_answer_the_same_tasks_and_queue_nothing_new(
        self, client: FlaskClient, fake_redis: fakeredis.FakeRedis
    ) -> None:
        headers = {"Idempotency-Key": "batch-42"}
        first = post_batch(client, adds(3), headers=headers)
        second = post_batch(client, adds(3), headers=headers)
        assert first.status_code == second.status_code == 202
        assert second.get_json() == first.get_json()
        assert "Idempotent-Replayed" not in first.headers and second.headers["Idempotent-Replayed"] == "true"
        assert fake_redis.llen(QUEUE) == 3

    def test_same_key_with_another_body_is_409_and_queues_nothing(
        self, client: FlaskClient, fake_redis: fakeredis.FakeRedis
    ) -> None:
        post_batch(client, adds(3), headers={"Idempotency-Key": "k"})
        for other in (adds(3, start=1), adds(2), adds(4)):
            reused = post_batch(client, other, headers={"Idempotency-Key": "k"})
            assert reused.status_code == 409 and reused.get_json()["error"] == "idempotency_key_reused"
        assert fake_redis.llen(QUEUE) == 3

    def test_a_key_of_a_single_submission_is_refused_for_a_batch_and_back(self, client: FlaskClient) -> None:
        client.post("/tasks/test/add?x=0&y=1", headers={"Idempotency-Key": "single"})
        assert post_batch(client, adds(1), headers={"Idempotency-Key": "single"}).status_code == 409
        post_batch(client, adds(1), headers={"Idempotency-Key": "batch"})
        assert client.post("/tasks/test/add?x=0&y=1", headers={"Idempotency-Key": "batch"}).status_code == 409

    def test_a_bad_key_is_400(self, client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
        answer = post_batch(client, adds(1), headers={"Idempotency-Key": "k" * 256})
        assert answer.status_code == 400 and answer.get_json()["parameter"] == "Idempotency-Key"
        assert fake_redis.llen(QUEUE) == 0 and "RateLimit-Remaining" not in answer.headers


def test_rate_limit_burst_and_per_minute_settings_count_tasks_not_requests(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    client = make_app(tmp_path, fake_redis, RATE_LIMIT_BURST="10", **TIGHT_LIMIT).test_client()
    first = post_batch(client, adds(6))
    assert first.status_code == 202 and first.headers["RateLimit-Remaining"] == "4"
    refused = post_batch(client, adds(5))  # one more than is left: all refused
    assert refused.status_code == 429 and refused.get_json()["error"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) == 60  # one token a minute, one token short
    assert refused.headers["RateLimit-Remaining"] == "4"
    assert fake_redis.llen(QUEUE) == 6
    assert post_batch(client, adds(4)).status_code == 202  # exactly what is left
    assert client.post("/tasks/test/add?x=1&y=1").status_code == 429  # the same bucket as single submissions
    assert fake_redis.llen(QUEUE) == 10


def test_rate_limit_burst_setting_refuses_a_batch_larger_than_the_bucket_with_422(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis
) -> None:
    client = make_app(tmp_path, fake_redis, RATE_LIMIT_BURST="10").test_client()
    answer = post_batch(client, adds(11))
    assert answer.status_code == 422 and "RATE_LIMIT_BURST" in answer.get_json()["message"]
    assert answer.get_json()["problems"][0]["parameter"] == "tasks"
    assert post_batch(client, adds(10)).status_code == 202  # nothing was taken by the refusal


def test_max_queue_depth_setting_counts_the_batch_tasks(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    client = make_app(tmp_path, fake_redis, MAX_QUEUE_DEPTH="5").test_client()
    assert post_batch(client, adds(3)).status_code == 202
    full = post_batch(client, adds(3))
    assert full.status_code == 503 and full.get_json()["error"] == "queue_full" and full.headers["Retry-After"] == "30"
    assert fake_redis.llen(QUEUE) == 3
    assert post_batch(client, adds(2)).status_code == 202
    assert fake_redis.llen(QUEUE) == 5


def test_metrics_count_each_task_of_a_batch_with_rate_limit_burst_and_per_minute_settings(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    client = make_app(tmp_path, fake_redis, RATE_LIMIT_BURST="10", **TIGHT_LIMIT).test_client()
    post_batch(client, adds(7)).close()
    post_batch(client, adds(4)).close()  # 3 tokens left: 4 rate-limited tasks
    post_batch(client, {"tasks": [{"type": "test.add"}, {"type": "test.long"}]}).close()  # 2 invalid tasks
    counts = {key.decode(): int(value) for key, value in fake_redis.hgetall(SUBMISSIONS_KEY).items()}
    assert counts == {"accepted": 7, "rate_limited": 4, "invalid": 2}
    scraped = client.get("/metrics").get_data(as_text=True)
    assert 'trustcard_submissions_total{outcome="accepted"} 7.0' in scraped


def test_a_callback_url_applies_to_every_task_of_the_batch(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    client = make_app(tmp_path, fake_redis, WEBHOOK_SECRET="s", WEBHOOK_ALLOW_PRIVATE="1").test_client()
    url = "http://127.0.0.1:9000/hook"
    tasks = post_batch(client, adds(3), headers={"Callback-URL": url}).get_json()["tasks"]
    assert [task["callback"]["url"] for task in tasks] == [url] * 3
    for task in tasks:
        assert Job.fetch(task["task_id"], connection=fake_redis, serializer=JSONSerializer).meta["callback_url"] == url


def test_without_webhook_secret_a_batch_with_a_callback_url_is_refused(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    answer = post_batch(client, adds(3), headers={"Callback-URL": "http://127.0.0.1:9000/hook"})
    assert answer.status_code == 422 and answer.get_json()["problems"][0]["parameter"] == "Callback-URL"
    assert fake_redis.llen(QUEUE) == 0


@pytest.mark.parametrize(
    "body",
    [
        adds(2),
        {"tasks": [{"type": "test.long"}, {"type": "test.long", "params": {}}]},
        {"tasks": [{"type": "test.fail"}]},
        {"tasks": []},
        {"tasks": [{"type": "test.add", "params": {"x": 1}}]},
        {"tasks": [{"type": "test.add", "params": {"x": 1, "y": 2, "z": 3}}]},
        {"tasks": [{"type": "test.nope"}]},
        {"tasks": [{"type": "webhooks.deliver"}]},
        {"tasks": [{"type": "test.long", "priority": 1}]},
        {"tasks": [{"type": "test.long"}], "more": 1},
        adds(MAX_BATCH_TASKS + 1),
    ],
)
def test_the_documented_body_model_agrees_with_the_check(body: dict[str, Any]) -> None:
    """The OpenAPI document's model and `validate_batch` accept and refuse the same bodies."""
    try:
        validate_batch(body)
        checked = True
    except ValidationFailed:
        checked = False
    try:
        BatchRequest.model_validate(body)
        modelled = True
    except ValidationError:
        modelled = False
    assert checked == modelled


def test_the_document_declares_the_batch_operation(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    operation = document["paths"]["/tasks/batch"]["post"]
    assert operation["operationId"] == "submit_batch"
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/BatchRequest"}
    assert {"202", "400", "409", "413", "422", "429", "503"} <= set(operation["responses"])
    assert document["components"]["schemas"]["BatchRequest"]["properties"]["tasks"]["maxItems"] == MAX_BATCH_TASKS
