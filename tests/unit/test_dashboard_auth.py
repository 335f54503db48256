"""The dashboard at /rq: every route behind Basic auth, or not served at all; JSON jobs read as JSON.

Apps whose Redis is unreachable (port 1) prove that the login is checked before any
Redis access: a request that got past it would answer 503, not 401.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask import Flask
from rq import Queue, Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from trustcard.api.app import create_app
from trustcard.catalogue import QUEUE_NAMES
from trustcard.config import load_settings

PASSWORD = "s3cret"
LOGIN = ("admin", PASSWORD)
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
SAMPLE_VALUES: dict[str, Any] = {
    "instance_number": 0,
    "queue_name": "analysis",
    "registry_name": "failed",
    "per_page": 8,
    "order": "asc",
    "page": 1,
    "job_id": "some-id",
    "filename": "css/main.css",
}
ACTIONS = {  # the POST actions rq-dashboard's pages call (rq_dashboard/web.py)
    "/rq/job/some-id/delete",
    "/rq/job/some-id/requeue",
    "/rq/requeue/analysis",
    "/rq/queue/analysis/failed/empty",
    "/rq/queue/analysis/compact",
}


def build_app(tmp_path: Path, redis: fakeredis.FakeRedis | None = None, **env: str) -> Flask:
    settings = load_settings(
        {"DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}", "REDIS_URL": UNREACHABLE_REDIS, "SECRET_KEY": "unit", **env}
    )
    return create_app(settings, redis=redis)


def dashboard_routes(app: Flask) -> list[tuple[str, str]]:
    """(method, path) for every method of every route the dashboard registered, with sample values."""
    adapter = app.url_map.bind("localhost")
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("rq_dashboard."):
            values = {name: SAMPLE_VALUES[name] for name in rule.arguments}
            path = adapter.build(rule.endpoint, values, force_external=False)
            routes += [(method, path) for method in sorted(rule.methods or ()) if method not in ("HEAD", "OPTIONS")]
    return routes


@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    yield client
    client.close()


def test_the_route_list_covers_every_post_action(tmp_path: Path) -> None:
    routes = dashboard_routes(build_app(tmp_path, DASHBOARD_PASSWORD=PASSWORD))
    assert ACTIONS <= {path for method, path in routes if method == "POST"}
    assert ("GET", "/rq/0/data/workers.json") in routes and ("GET", "/rq/") in routes


@pytest.mark.parametrize(
    "auth",
    [None, ("admin", "wrong"), ("someone", PASSWORD), ("admin", ""), ("", ""), ("admin", PASSWORD + "x")],
    ids=["none", "wrong-password", "wrong-user", "empty-password", "empty", "longer-password"],
)
def test_every_route_and_method_needs_the_login(tmp_path: Path, auth: tuple[str, str] | None) -> None:
    app = build_app(tmp_path, DASHBOARD_PASSWORD=PASSWORD)
    client = app.test_client()
    extra = ["/rq", "/rq/no-such-page", "/rq/0/view/job/x/../../queues"]
    for method, path in dashboard_routes(app) + [("GET", path) for path in extra]:
        response = client.open(path, method=method, auth=auth)
        assert response.status_code == 401, (method, path)
        assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
        assert response.get_json()["error"] == "unauthorized"


def test_a_bearer_token_is_not_a_login(tmp_path: Path) -> None:
    client = build_app(tmp_path, DASHBOARD_PASSWORD=PASSWORD).test_client()
    response = client.get("/rq/", headers={"Authorization": f"Bearer {PASSWORD}"})
    assert response.status_code == 401


def test_every_app_built_in_one_process_is_guarded(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    apps = [build_app(tmp_path, DASHBOARD_PASSWORD=PASSWORD) for _ in range(3)]
    other = build_app(tmp_path, fake_redis, DASHBOARD_PASSWORD="other-pass", DASHBOARD_USERNAME="ops")
    without = build_app(tmp_path)
    for app in apps:
        assert app.test_client().get("/rq/").status_code == 401
        assert app.test_client().post("/rq/queue/analysis/queued/empty").status_code == 401
    assert other.test_client().get("/rq/0/data/queues.json", auth=LOGIN).status_code == 401
    assert other.test_client().get("/rq/0/data/queues.json", auth=("ops", "other-pass")).status_code == 200
    assert without.test_client().get("/rq/").status_code == 404
    assert apps[0].test_client().get("/rq/").status_code == 401  # a later app changes nothing


def test_without_a_password_there_is_no_dashboard(tmp_path: Path) -> None:
    client = build_app(tmp_path).test_client()
    routes = [("GET", "/rq/"), ("GET", "/rq/0/data/queues.json"), ("POST", "/rq/queue/analysis/failed/empty")]
    for method, path in routes:
        response = client.open(path, method=method, auth=LOGIN)
        assert response.status_code == 404, path
        assert response.get_json()["error"] == "not_found"
        assert "WWW-Authenticate" not in response.headers


def test_other_routes_do_not_ask_for_the_dashboard_login(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    client = build_app(tmp_path, fake_redis, DASHBOARD_PASSWORD=PASSWORD).test_client()
    assert client.post("/tasks/test/add?x=1&y=2").status_code == 202
    assert client.get("/rqx").status_code == 404


def test_with_the_login_it_reads_our_redis(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    client = build_app(tmp_path, fake_redis, DASHBOARD_PASSWORD=PASSWORD).test_client()
    task_id = client.post("/tasks/test/add?x=1&y=2").get_json()["task_id"]
    queues = client.get("/rq/0/data/queues.json", auth=LOGIN)
    assert queues.status_code == 200
    counts = {queue["name"]: queue["count"] for queue in queues.get_json()["queues"]}
    assert counts == {name: 1 if name == "analysis" else 0 for name in QUEUE_NAMES}  # idle queues too
    job = client.get(f"/rq/0/data/job/{task_id}.json", auth=LOGIN).get_json()
    assert job["description"] == "workers.diagnostics.add(x=1, y=2)" and job["status"] == "queued"
    assert client.get(f"/rq/0/view/job/{task_id}", auth=LOGIN).status_code == 200


def test_a_worker_running_a_json_job_is_listed(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    """Stock rq-dashboard lists workers with pickle and answers 500 here."""
    client = build_app(tmp_path, fake_redis, DASHBOARD_PASSWORD=PASSWORD).test_client()
    task_id = client.post("/tasks/test/add?x=3&y=4").get_json()["task_id"]
    queue = Queue("analysis", connection=fake_redis, serializer=JSONSerializer)
    job = Job.fetch(task_id, connection=fake_redis, serializer=JSONSerializer)
    worker = Worker([queue], connection=fake_redis, serializer=JSONSerializer, name="busy-worker")
    worker.register_birth()
    worker.prepare_execution(job)
    worker.prepare_job_execution(job)

    response = client.get("/rq/0/data/workers.json", auth=LOGIN)
    assert response.status_code == 200, response.get_json()
    [listed] = response.get_json()["workers"]
    assert listed["name"] == "busy-worker"
    assert listed["current_job"]["job_id"] == task_id
    assert listed["current_job"]["call_string"] == "workers.diagnostics.add(x=3, y=4)"
    assert client.get("/rq/0/view/workers", auth=LOGIN).status_code == 200


def test_actions_answer_json_errors_not_500(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    client = build_app(tmp_path, fake_redis, DASHBOARD_PASSWORD=PASSWORD).test_client()
    task_id = client.post("/tasks/test/add?x=1&y=2").get_json()["task_id"]
    unknown_page = client.get("/rq/0/view/job/no-such-job", auth=LOGIN)
    assert unknown_page.status_code == 404 and unknown_page.get_json()["error"] == "task_not_found"
    assert client.post("/rq/job/no-such-job/requeue", auth=LOGIN).status_code == 404
    not_failed = client.post(f"/rq/job/{task_id}/requeue", auth=LOGIN)
    assert not_failed.status_code == 409 and not_failed.get_json()["error"] == "task_not_retryable"
    assert client.get("/rq/1/data/queues.json", auth=LOGIN).status_code == 404  # one Redis: instance 0
    assert client.post(f"/rq/job/{task_id}/delete", auth=LOGIN).get_json() == {"status": "OK"}
    assert client.get(f"/tasks/{task_id}").status_code == 404


def test_unreachable_redis_is_a_503(tmp_path: Path) -> None:
    client = build_app(tmp_path, DASHBOARD_PASSWORD=PASSWORD).test_client()
    response = client.get("/rq/0/data/queues.json", auth=LOGIN)
    assert response.status_code == 503
    assert response.get_json()["error"] == "queue_unavailable"


def test_every_catalogue_queue_is_listed_before_any_job_and_after_a_flush(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis
) -> None:
    """RQ lists a queue only once a job was put on it; the dashboard shows every queue."""
    client = build_app(tmp_path, fake_redis, DASHBOARD_PASSWORD=PASSWORD).test_client()
    names = {queue["name"] for queue in client.get("/rq/0/data/queues.json", auth=LOGIN).get_json()["queues"]}
    assert names == set(QUEUE_NAMES)
    fake_redis.flushall()
    names = {queue["name"] for queue in client.get("/rq/0/data/queues.json", auth=LOGIN).get_json()["queues"]}
    assert names == set(QUEUE_NAMES)
