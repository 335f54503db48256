"""The dashboard's JSON jobs lists answer exactly their page, in both orders, in rq-dashboard's shape."""

from __future__ import annotations

import math
from pathlib import Path

import fakeredis
import pytest
import rq_dashboard.web
from flask import Flask
from rq.queue import Queue
from rq.serializers import JSONSerializer

from tests.support.stored_tasks import fill
from trustcard.api.app import create_app
from trustcard.api.dashboard_pages import jobs_page
from trustcard.config import load_settings

PASSWORD = "s3cret"
LOGIN = ("admin", PASSWORD)
FINISHED, FAILED, QUEUED = 43, 21, 19
"""Odd sizes, so that the last page is a short one."""
JOB_KEYS = {"id", "created_at", "started_at", "ended_at", "exc_info", "description"}


@pytest.fixture
def app(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> Flask:
    settings = load_settings({"DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}", "SECRET_KEY": "unit",
                              "DASHBOARD_PASSWORD": PASSWORD})
    fill(fake_redis, settings, FINISHED, FAILED)
    queue = Queue("analysis", connection=fake_redis, serializer=JSONSerializer)
    for number in range(QUEUED):
        queue.enqueue_call("workers.diagnostics.add", kwargs={"x": number, "y": 0})
    return create_app(settings, redis=fake_redis)


def stored_ids(fake_redis: fakeredis.FakeRedis, registry: str) -> list[str]:
    if registry == "queued":
        return [item.decode() for item in fake_redis.lrange("rq:queue:analysis", 0, -1)]
    return [item.decode() for item in fake_redis.zrange(f"rq:{registry}:analysis", 0, -1)]


def listed(app: Flask, registry: str, per_page: int, order: str, page: int) -> dict:
    response = app.test_client().get(f"/rq/0/data/jobs/analysis/{registry}/{per_page}/{order}/{page}.json",
                                     auth=LOGIN)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    return response.get_json()


@pytest.mark.parametrize("registry", ["finished", "failed", "queued"])
@pytest.mark.parametrize("order", ["asc", "dsc", "desc"])
def test_first_middle_and_last_page_hold_exactly_their_jobs(
    app: Flask, fake_redis: fakeredis.FakeRedis, registry: str, order: str
) -> None:
    every = stored_ids(fake_redis, registry)
    assert len(every) == {"finished": FINISHED, "failed": FAILED, "queued": QUEUED}[registry]
    ordered = every if order == "asc" else every[::-1]
    pages = math.ceil(len(every) / 8)
    for page in sorted({1, (pages + 1) // 2, pages}):
        answer = listed(app, registry, 8, order, page)
        assert [job["id"] for job in answer["jobs"]] == ordered[(page - 1) * 8 : page * 8], page
        assert answer["pagination"]["current_page"] == page and answer["pagination"]["num_pages"] == pages
        assert answer["name"] == "analysis" and answer["registry_name"] == registry
    assert listed(app, registry, 8, order, pages + 1)["jobs"] == []  # past the end: nothing, not everything


def test_the_answer_has_rq_dashboards_shape_and_values(app: Flask, fake_redis: fakeredis.FakeRedis) -> None:
    """Page 1 ascending is the one page rq-dashboard's own code reads right: the same jobs, field for field."""
    original = rq_dashboard.web.serialize_job
    with app.test_request_context():
        total, ours = jobs_page("analysis", "failed", 0, 8, "asc", fake_redis)
        job_ids = stored_ids(fake_redis, "failed")[:8]
        queue = Queue("analysis", connection=fake_redis, serializer=JSONSerializer)
        theirs = [original(queue.fetch_job(job_id)) for job_id in job_ids]
    assert total == FAILED and ours == theirs
    assert set(ours[0]) == JOB_KEYS and "RuntimeError" in ours[0]["exc_info"]
    finished = listed(app, "finished", 8, "asc", 1)["jobs"][0]
    assert finished["exc_info"] is None and finished["description"] == "workers.diagnostics.add(x=7, y=8)"


def test_page_links_point_to_the_dashboards_own_pages(app: Flask) -> None:
    pagination = listed(app, "finished", 8, "dsc", 3)["pagination"]
    assert pagination["prev_page"]["url"] == "/rq/0/view/jobs/analysis/finished/8/dsc/2"
    assert pagination["next_page"]["url"] == "/rq/0/view/jobs/analysis/finished/8/dsc/4"
    assert pagination["last_page"]["url"] == "/rq/0/view/jobs/analysis/finished/8/dsc/6"
    assert [page["number"] for page in pagination["pages_in_window"]] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("path", "parameter"),
    [("finished/0/asc/1", "per_page"), ("finished/101/asc/1", "per_page"), ("finished/8/asc/0", "page"),
     ("finished/eight/asc/1", "per_page"), ("finished/8/asc/-1", "page")],
)
def test_a_bad_page_size_or_number_is_a_422_naming_it(app: Flask, path: str, parameter: str) -> None:
    response = app.test_client().get(f"/rq/0/data/jobs/analysis/{path}.json", auth=LOGIN)
    assert response.status_code == 422
    assert response.get_json()["problems"][0]["parameter"] == parameter


def test_an_unknown_registry_is_a_404_naming_the_lists(app: Flask) -> None:
    response = app.test_client().get("/rq/0/data/jobs/analysis/lost/8/asc/1.json", auth=LOGIN)
    assert response.status_code == 404
    assert response.get_json()["error"] == "unknown_registry" and "finished" in response.get_json()["message"]
