"""Fixtures shared by the fast unit tests: settings, fakeredis, an app and its client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from trustcard.api.app import create_app
from trustcard.config import Settings, load_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for a unit test: SQLite in the test's own folder, no real Redis."""
    return load_settings({"DATABASE_URL": f"sqlite:///{tmp_path / 'unit.db'}", "SECRET_KEY": "unit-test"})


@pytest.fixture
def fake_redis() -> Iterator[fakeredis.FakeRedis]:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    yield client
    client.close()


@pytest.fixture
def app(settings: Settings, fake_redis: fakeredis.FakeRedis) -> Iterator[Flask]:
    application = create_app(settings, redis=fake_redis)
    application.config["TESTING"] = True
    yield application
    application.extensions["trustcard.engine"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
