"""The HTTP contract on fakeredis: answers, error shapes and what lands in Redis."""

from __future__ import annotations

import json
import zlib

import fakeredis
import redis.client
import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from trustcard.api.app import create_app
from trustcard.config import Settings, load_settings


def submit(client: FlaskClient, path: str, **kwargs: object) -> dict[str, object]:
    response = client.post(path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def test_submit_answers_202_with_location_and_stores_json(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    response = client.post("/tasks/test/add?x=7&y=8")
    body = response.get_json()
    assert response.status_code == 202
    assert body["status"] == "submitted" and body["name"] == "test.add" and body["queue"] == "analysis"
    assert response.headers["Location"] == f"/tasks/{body['task_id']}"
    raw = fake_redis.hget(f"rq:job:{body['task_id']}", "data")
    assert raw is not None
    function, _, args, kwargs = json.loads(zlib.decompress(raw))  # JSON, not pickle
    assert function == "workers.diagnostics.add" and kwargs == {"x": 7, "y": 8}


def test_limits_come_from_settings(client: FlaskClient, fake_redis: fakeredis.FakeRedis, settings: Settings) -> None:
    task_id = submit(client, "/tasks/test/sleep", json={"seconds": 1})["task_id"]
    job = Job.fetch(task_id, connection=fake_redis, serializer=JSONSerializer)
    assert job.timeout == settings.job_soft_timeout
    assert job.meta["hard_timeout"] == settings.job_timeout
    assert job.result_ttl == settings.result_ttl and job.failure_ttl == settings.failure_ttl


def test_status_of_a_waiting_task(client: FlaskClient) -> None:
    task_id = submit(client, "/tasks/test/long")["task_id"]
    body = client.get(f"/tasks/{task_id}").get_json()
    assert body["status"] == "pending"
    assert body["result"] is None and body["error"] is None and body["progress"] is None
    assert body["submitted_at"].endswith("Z")


def test_cancel_a_waiting_task_takes_it_off_the_queue(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    task_id = submit(client, "/tasks/test/add?x=1&y=2")["task_id"]
    response = client.delete(f"/tasks/{task_id}")
    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"
    assert fake_redis.lrange("rq:queue:analysis", 0, -1) == []
    assert client.get(f"/tasks/{task_id}").get_json()["status"] == "cancelled"
    again = client.delete(f"/tasks/{task_id}")
    assert again.status_code == 409
    assert again.get_json()["error"] == "task_already_ended" and again.get_json()["status"] == "cancelled"


def test_cancel_an_ended_task_is_409(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    task_id = submit(client, "/tasks/test/add?x=1&y=2")["task_id"]
    fake_redis.hset(f"rq:job:{task_id}", "status", JobStatus.FINISHED.value)
    response = client.delete(f"/tasks/{task_id}")
    assert response.status_code == 409
    assert response.get_json()["status"] == "completed"


def test_cancel_of_a_running_task_that_succeeds_meanwhile_is_409_completed(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the chaos soak found: the job's success reached Redis as the stop went out."""
    from trustcard.task_service import TaskService

    task_id = submit(client, "/tasks/test/add?x=1&y=2")["task_id"]
    fake_redis.hset(f"rq:job:{task_id}", "status", JobStatus.STARTED.value)

    def succeeds_first(service: TaskService, job: Job) -> None:
        fake_redis.hset(job.key, "status", JobStatus.FINISHED.value)

    monkeypatch.setattr(TaskService, "_stop_running", succeeds_first)
    response = client.delete(f"/tasks/{task_id}")
    assert response.status_code == 409, response.get_json()
    assert response.get_json()["error"] == "task_already_ended" and response.get_json()["status"] == "completed"


@pytest.mark.parametrize("method", ["get", "delete"])
@pytest.mark.parametrize("task_id", ["no-such-task", "bad%20id", "x" * 65])
def test_unknown_task_is_404(client: FlaskClient, method: str, task_id: str) -> None:
    response = getattr(client, method)(f"/tasks/{task_id}")
    assert response.status_code == 404
    assert response.get_json()["error"] == "task_not_found"


def test_running_list_is_empty_without_workers(client: FlaskClient) -> None:
    submit(client, "/tasks/test/add?x=1&y=2")
    assert client.get("/tasks/").get_json() == {"tasks": [], "count": 0}


@pytest.mark.parametrize(
    ("request_kwargs", "status", "code", "named"),
    [
        ({"query_string": "x=1"}, 422, "validation_error", "y"),
        ({"query_string": "x=abc&y=1"}, 422, "validation_error", "x"),
        ({"json": {"x": 1, "y": 2, "z": 3}}, 422, "validation_error", "z"),
        ({"query_string": "x=1&x=2&y=1"}, 400, "bad_request", "x"),
        ({"query_string": "x=1&y=1", "json": {"x": 2}}, 400, "bad_request", "x"),
        ({"data": "{broken", "content_type": "application/json"}, 400, "bad_request", "JSON"),
        ({"data": "[1, 2]", "content_type": "application/json"}, 400, "bad_request", "object"),
        ({"data": "x=1&y=2", "content_type": "text/plain"}, 400, "bad_request", "JSON"),
    ],
)
def test_bad_input_is_a_named_4xx(
    client: FlaskClient, request_kwargs: dict[str, object], status: int, code: str, named: str
) -> None:
    response = client.post("/tasks/test/add", **request_kwargs)  # type: ignore[arg-type]
    body = response.get_json()
    assert response.status_code == status
    assert body["error"] == code and named in body["message"]
    assert "Traceback" not in response.get_data(as_text=True)


def test_oversized_body_is_413_before_reading(client: FlaskClient, settings: Settings) -> None:
    body = b"{" + b" " * settings.max_request_bytes + b"}"
    response = client.post("/tasks/test/add", data=body, content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"] == "payload_too_large"


def test_unknown_job_type_and_method_are_json(client: FlaskClient) -> None:
    missing = client.post("/tasks/test/nothing")
    assert missing.status_code == 404 and missing.get_json()["error"] == "unknown_job_type"
    wrong_method = client.put("/tasks/abc")
    assert wrong_method.status_code == 405 and wrong_method.get_json()["error"] == "method_not_allowed"
    nowhere = client.get("/nowhere")
    assert nowhere.status_code == 404 and nowhere.get_json()["error"] == "not_found"


def test_health_reports_every_part(client: FlaskClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {
        "status": "healthy",
        "database": "connected",
        "workers": 0,
        "queues": {"webhooks": 0, "analysis": 0, "models": 0, "ingest": 0},
        "redis": "connected",
    }


def test_health_names_an_unreachable_database(tmp_path: object, fake_redis: fakeredis.FakeRedis) -> None:
    settings = load_settings({"DATABASE_URL": "sqlite:////nonexistent-dir/x/y.db"})
    response = create_app(settings, redis=fake_redis).test_client().get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["database"] == "unreachable" and body["failing"] == ["database"] and body["redis"] == "connected"


def test_redis_down_is_503_with_retry_after(settings: Settings) -> None:
    dead = load_settings({"REDIS_URL": "redis://127.0.0.1:1/0", "DATABASE_URL": settings.database_url})
    client = create_app(dead).test_client()
    submitted = client.post("/tasks/test/add?x=1&y=2")
    assert submitted.status_code == 503
    assert submitted.get_json()["error"] == "queue_unavailable" and submitted.headers["Retry-After"] == "5"
    health = client.get("/health")
    assert health.status_code == 503 and health.get_json()["failing"] == ["redis"]


class TestApiKey:
    @pytest.fixture
    def app(self, settings: Settings, fake_redis: fakeredis.FakeRedis) -> Flask:
        keyed = load_settings({"API_KEY": "s3cret", "DATABASE_URL": settings.database_url})
        return create_app(keyed, redis=fake_redis)

    @pytest.mark.parametrize("header", [None, "Bearer wrong", "s3cret", "Basic s3cret"])
    def test_tasks_need_the_key(self, client: FlaskClient, header: str | None) -> None:
        headers = {"Authorization": header} if header else {}
        for response in (
            client.post("/tasks/test/add?x=1&y=2", headers=headers),
            client.get("/tasks/", headers=headers),
            client.get("/tasks/abc", headers=headers),
            client.delete("/tasks/abc", headers=headers),
        ):
            assert response.status_code == 401 and response.get_json()["error"] == "unauthorized"

    def test_the_key_opens_tasks_and_health_stays_open(self, client: FlaskClient) -> None:
        ok = client.post("/tasks/test/add?x=1&y=2", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 202
        assert client.get("/health").status_code == 200


class RoundTrips:
    """Counts Redis round trips: one per plain command, one per pipeline sent."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, connection: fakeredis.FakeRedis) -> None:
        self.count = 0
        execute_command, pipeline_execute = type(connection).execute_command, redis.client.Pipeline.execute

        def counted_command(this: fakeredis.FakeRedis, *args: object, **kwargs: object) -> object:
            self.count += 1
            return execute_command(this, *args, **kwargs)

        def counted_pipeline(this: redis.client.Pipeline, *args: object, **kwargs: object) -> object:
            self.count += 1
            return pipeline_execute(this, *args, **kwargs)

        monkeypatch.setattr(type(connection), "execute_command", counted_command)
        monkeypatch.setattr(redis.client.Pipeline, "execute", counted_pipeline)


def test_reading_a_task_is_one_redis_round_trip(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients poll GET /tasks/<id>: the job hash, the cancel flag in it and the latest
    result are read together, whatever state the task is in, and for a running task whether
    its worker lives (trustcard.task_reading)."""
    waiting = submit(client, "/tasks/test/add?x=1&y=2")["task_id"]
    cancelled = submit(client, "/tasks/test/add?x=1&y=2")["task_id"]
    assert client.delete(f"/tasks/{cancelled}").status_code == 200
    running = submit(client, "/tasks/test/add?x=1&y=3")["task_id"]
    fake_redis.hset(f"rq:job:{running}", mapping={"status": "started", "worker_name": "w1",
                                                  "started_at": "2026-12-03T11:00:00.000000Z"})
    fake_redis.hset("rq:worker:w1", "state", "busy")
    round_trips = RoundTrips(monkeypatch, fake_redis)
    for task_id, status in ((waiting, "pending"), (cancelled, "cancelled"), (running, "started")):
        round_trips.count = 0
        assert client.get(f"/tasks/{task_id}").get_json()["status"] == status
        assert round_trips.count == 1, task_id


def test_a_submission_is_one_redis_round_trip(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The admission script: the rate-limit take, the MAX_QUEUE_DEPTH check, RQ's own enqueue
    commands and the count for /metrics, in one call (trustcard.admission); nothing more,
    also once the answer is closed. The job it wrote reads back as any other."""
    submit(client, "/tasks/test/add?x=1&y=2")  # the first one also learns Redis's version
    round_trips = RoundTrips(monkeypatch, fake_redis)
    with client.post("/tasks/test/add?x=2&y=2") as response:
        task_id = response.get_json()["task_id"]
        assert response.headers["RateLimit-Remaining"].isdigit()
    assert round_trips.count == 1
    assert fake_redis.lrange("rq:queue:analysis", 0, -1)[-1].decode() == task_id
    assert fake_redis.sismember("rq:queues", "rq:queue:analysis")
    stored = client.get(f"/tasks/{task_id}").get_json()
    assert (stored["status"], stored["name"]) == ("pending", "test.add"), stored


def test_the_session_signer_is_built_once_per_app(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flask builds a cookie signer for every request; ours builds it once (trustcard.api.sessions)."""
    from flask.sessions import SecureCookieSessionInterface

    built: list[object] = []
    stock = SecureCookieSessionInterface.get_signing_serializer

    def counted(self: SecureCookieSessionInterface, flask_app: Flask) -> object:
        built.append(flask_app)
        return stock(self, flask_app)

    monkeypatch.setattr(SecureCookieSessionInterface, "get_signing_serializer", counted)
    client = app.test_client()
    for _ in range(3):
        assert client.get("/tasks/no-such-task").status_code == 404
    assert built == [app]


def test_a_request_without_cookies_opens_the_session_the_stock_interface_opens(app: Flask) -> None:
    """Without a Cookie header no cookie is parsed (trustcard.api.sessions), and the session is what
    Flask's own interface gives: a new, empty one; with the cookie, the stored session is read."""
    from flask.sessions import SecureCookieSessionInterface

    ours, stock = app.session_interface, SecureCookieSessionInterface()
    with app.test_request_context("/tasks/no-such-task"):
        from flask import request

        opened, expected = ours.open_session(app, request), stock.open_session(app, request)
        assert type(opened) is type(expected) and dict(opened) == dict(expected) == {}  # type: ignore[arg-type]
        assert not opened.modified and not opened.accessed  # type: ignore[union-attr]
    cookie = stock.get_signing_serializer(app).dumps({"user": "ops"})  # type: ignore[union-attr]
    with app.test_request_context("/tasks/no-such-task", headers={"Cookie": f"{app.config['SESSION_COOKIE_NAME']}={cookie}"}):
        from flask import request

        assert dict(ours.open_session(app, request)) == {"user": "ops"}  # type: ignore[arg-type]


def test_the_task_answer_has_every_field_in_order(client: FlaskClient) -> None:
    task_id = submit(client, "/tasks/test/add?x=1&y=2")["task_id"]
    assert list(client.get(f"/tasks/{task_id}").get_json()) == [
        "task_id", "name", "queue", "status", "result", "error", "progress", "worker", "submitted_by", "callback",
        "submitted_at", "started_at", "ended_at",
    ]
