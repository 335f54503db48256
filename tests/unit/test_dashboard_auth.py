"""The dashboard at /rq: every route behind Basic auth, or not served at all."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient

from trustcard.app import create_app
from trustcard.config import load_settings

GUARDED = [
    ("get", "/rq/"),
    ("get", "/rq/0/view/workers"),
    ("get", "/rq/0/data/queues.json"),
    ("get", "/rq/0/data/workers.json"),
    ("post", "/rq/job/some-id/delete"),
    ("post", "/rq/job/some-id/requeue"),
    ("post", "/rq/requeue/analysis"),
    ("post", "/rq/queue/analysis/failed/empty"),
    ("post", "/rq/queue/analysis/compact"),
]


def dashboard_client(tmp_path: Path, **env: str) -> FlaskClient:
    settings = load_settings({"DATABASE_URL": f"sqlite:///{tmp_path / 'd.db'}", "REDIS_URL": "redis://127.0.0.1:1/0", **env})
    return create_app(settings).test_client()


@pytest.mark.parametrize(("method", "path"), GUARDED)
@pytest.mark.parametrize("auth", [None, ("admin", "wrong"), ("someone", "s3cret"), ("admin", "")])
def test_every_route_needs_the_login(tmp_path: Path, method: str, path: str, auth: tuple[str, str] | None) -> None:
    client = dashboard_client(tmp_path, DASHBOARD_PASSWORD="s3cret")
    response = getattr(client, method)(path, auth=auth)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert response.get_json()["error"] == "unauthorized"


def test_each_app_built_is_guarded(tmp_path: Path) -> None:
    for _ in range(3):
        assert dashboard_client(tmp_path, DASHBOARD_PASSWORD="s3cret").get("/rq/").status_code == 401


def test_without_a_password_there_is_no_dashboard(tmp_path: Path) -> None:
    client = dashboard_client(tmp_path)
    assert client.get("/rq/").status_code == 404
    assert client.post("/rq/queue/analysis/failed/empty").status_code == 404
