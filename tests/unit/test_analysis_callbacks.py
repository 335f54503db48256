"""An analysis's Callback-URL: refused without a secret, delivered signed once it has ended."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask.testing import FlaskClient

from tests.support.migrations import upgrade
from tests.unit.test_analyses import POST, read, work
from trustcard.api.app import create_app
from trustcard.callbacks import signature
from trustcard.config import load_settings
from workers import storage

SECRET = "analysis-webhook-secret"


class Receiver:
    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FlaskClient, fakeredis.FakeRedis]]:
    url = f"sqlite:///{tmp_path / 'callbacks.db'}"
    upgrade(url)
    env = {"DATABASE_URL": url, "SECRET_KEY": "unit", "WEBHOOK_SECRET": SECRET, "WEBHOOK_ALLOW_PRIVATE": "true"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(storage, "_engine", None)
    redis = fakeredis.FakeRedis()
    app = create_app(load_settings(env), redis=redis)
    yield app.test_client(), redis
    app.extensions["trustcard.engine"].dispose()
    storage.engine().dispose()
    monkeypatch.setattr(storage, "_engine", None)


def test_the_final_view_is_posted_signed_once_the_analysis_completed(
    setup: tuple[FlaskClient, fakeredis.FakeRedis], receiver: Receiver
) -> None:
    client, redis = setup
    response = client.post("/analyses", json={"url": POST}, headers={"Callback-URL": receiver.url})
    assert response.status_code == 202
    analysis = response.get_json()
    assert analysis["callback"] == {"url": receiver.url, "status": "waiting", "attempts": 0, "last_error": None}
    work(redis)
    [(headers, body)] = receiver.requests
    sent = json.loads(body)
    assert sent["id"] == analysis["id"] and sent["status"] == "completed"
    timestamp = int(headers["TrustCard-Signature"].split(",")[0].removeprefix("t="))
    assert headers["TrustCard-Signature"] == signature(SECRET, body, timestamp)
    assert read(client, analysis["id"])["callback"] == {
        "url": receiver.url, "status": "delivered", "attempts": 1, "last_error": None}


def test_a_cancelled_analysis_is_delivered_too(setup: tuple[FlaskClient, fakeredis.FakeRedis], receiver: Receiver) -> None:
    client, redis = setup
    analysis = client.post("/analyses", json={"url": POST}, headers={"Callback-URL": receiver.url}).get_json()
    assert client.delete(f"/analyses/{analysis['id']}").status_code == 200
    work(redis)
    assert [json.loads(body)["status"] for _, body in receiver.requests] == ["cancelled"]


def test_a_callback_that_cannot_be_signed_or_called_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'refused.db'}"
    upgrade(url)
    app = create_app(load_settings({"DATABASE_URL": url, "SECRET_KEY": "unit"}), redis=fakeredis.FakeRedis())
    client = app.test_client()
    unsigned = client.post("/analyses", json={"url": POST}, headers={"Callback-URL": "https://example.com/hook"})
    assert unsigned.status_code == 422 and unsigned.get_json()["problems"][0]["parameter"] == "Callback-URL"
    app.extensions["trustcard.engine"].dispose()
