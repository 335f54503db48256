"""Fixtures of the integration tests: real Redis, PostgreSQL, `rq worker` and gunicorn.

Each test that builds its own stack gets the tests' Redis DB index (emptied before and
after) at 127.0.0.1:6379, and the run's PostgreSQL database (migrated once, dropped at
the end). Tests that leave its parts alone share a stack per module (`shared_stack`), on a
redis-server of its own, so that emptying the DB index for another test never touches it.
A test that stops Redis gets a private one (`private_redis`). A missing service is a
failure, never a skip: `.ci/run` starts them. When a test fails, the logs of the
processes it used are printed with its report. The plumbing is in tests/support.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis

from tests.support.migrations import upgrade
from tests.support.redis_server import PrivateRedis
from tests.support.stack import (
    DASHBOARD_LOGIN,
    POSTGRES_ADMIN_DSN,
    POSTGRES_SERVER_URL,
    REDIS_URL,
    Stack,
    WebProcess,
)

LOG_TAIL_CHARACTERS = 20_000
PROCESS_LOGS = pytest.StashKey[list[Path]]()
"""Log files of the processes a test used, printed when the test fails."""


# --- logs of started processes in the report of a failed test ----------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.failed:
        for path in item.stash.get(PROCESS_LOGS, []):
            text = path.read_text(errors="replace") if path.exists() else "(no log written)"
            report.sections.append((f"log of {path.name}", text[-LOG_TAIL_CHARACTERS:]))
    return report


@pytest.fixture
def process_logs(request: pytest.FixtureRequest) -> list[Path]:
    """Where fixtures list the log files of the processes they start for this test."""
    return request.node.stash.setdefault(PROCESS_LOGS, [])


# --- Redis and PostgreSQL ----------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The tests' Redis DB index; it must answer and must not be in use by anyone else."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
        index = int(client.connection_pool.connection_kwargs.get("db") or 0)
        own_id = client.client_id()
        others = [c for c in client.client_list() if int(c.get("db", -1)) == index and int(c["id"]) != own_id]
    except redis.exceptions.ConnectionError as error:
        pytest.fail(f"integration tests need Redis at {REDIS_URL} ({error}); .ci/run starts it")
    finally:
        client.close()
    if others:  # another test run (or its leftover workers) would take our jobs and flush our data
        addresses = ", ".join(sorted(str(c["addr"]) for c in others))
        pytest.fail(
            f"Redis DB {index} at {REDIS_URL} is in use by {len(others)} other connection(s) ({addresses}); "
            "stop the other test run, or set TEST_REDIS_URL to a free DB index"
        )
    return REDIS_URL


@pytest.fixture
def clean_redis(redis_url: str) -> Iterator[redis.Redis]:
    """The test's DB index, emptied before and after (FLUSHDB: that index only)."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A migrated PostgreSQL database for this run, as a `postgresql://` URL the app rewrites."""
    name = f"trustcard_it_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg2.connect(POSTGRES_ADMIN_DSN, connect_timeout=3)
    except psycopg2.OperationalError as error:
        pytest.fail(f"integration tests need PostgreSQL ({error}); .ci/run starts it")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{POSTGRES_SERVER_URL}/{name}"
        upgrade(url)
        yield url
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server of the test's own, with no persistence, which the test may stop."""
    with PrivateRedis.started(tmp_path / "private-redis") as server:
        yield server


# --- stacks ------------------------------------------------------------------------


def _stack_env(redis_url: str, database_url: str, env: dict[str, str]) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "DATABASE_URL": database_url, "SECRET_KEY": "integration", **env}


@pytest.fixture
def make_stack(
    clean_redis: redis.Redis, database_url: str, tmp_path: Path, process_logs: list[Path]
) -> Iterator[Callable[..., Stack]]:
    """Build a stack on the test's Redis index and the run's database; env overrides settings."""
    stacks: list[Stack] = []

    def build(redis_url: str | None = None, **env: str) -> Stack:
        stack = Stack.build(_stack_env(redis_url or REDIS_URL, database_url, env), tmp_path, process_logs)
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.stop()


@pytest.fixture(scope="module")
def shared_stacks(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    """Stacks with one worker each, shared by the tests of a module that neither stop their
    parts nor change their settings: one per set of settings (env overrides), each on a
    redis-server of its own, which no test empties under it."""
    built: dict[tuple[tuple[str, str], ...], Stack] = {}
    servers: list[PrivateRedis] = []

    def get(**env: str) -> Stack:
        key = tuple(sorted(env.items()))
        if key not in built:
            directory = tmp_path_factory.mktemp("shared-stack")
            server = PrivateRedis.started(directory / "redis")
            servers.append(server)
            stack = Stack.build(_stack_env(server.url, database_url, env), directory, [])
            built[key] = stack
            stack.start_worker()
        return built[key]

    try:
        yield get
    finally:
        try:
            for stack in built.values():
                stack.stop()
        finally:
            for server in servers:
                server.stop()


@pytest.fixture
def stack(shared_stacks: Callable[..., Stack], process_logs: list[Path]) -> Stack:
    """The module's shared stack at the default settings, with one worker."""
    return shared_stacks().for_test(process_logs)


@pytest.fixture(scope="module")
def shared_web(shared_stacks: Callable[..., Stack]) -> Iterator[WebProcess]:
    """gunicorn from the Procfile's `web:` line on the module's shared stack, for the module."""
    stack = shared_stacks()
    web = WebProcess.start_web(stack.env, stack.log_dir)
    stack.logs.append(web.log_path)
    try:
        yield web
    finally:
        web.kill()


@pytest.fixture
def web_and_worker(stack: Stack, shared_web: WebProcess) -> tuple[Stack, WebProcess]:
    """The module's shared stack (one worker) and its web process, for this test."""
    return stack, shared_web


@pytest.fixture
def start_web(tmp_path: Path, process_logs: list[Path]) -> Iterator[Callable[[dict[str, str]], WebProcess]]:
    """gunicorn from the Procfile's `web:` line with `PORT` and `WEB_CONCURRENCY=1`."""
    started: list[WebProcess] = []

    def start(env: dict[str, str]) -> WebProcess:
        web = WebProcess.start_web(env, tmp_path)
        process_logs.append(web.log_path)
        started.append(web)
        return web

    yield start
    for web in started:
        web.kill()


# --- the dashboard and browser tests' stacks ---------------------------------------


@pytest.fixture(scope="session")
def dashboard_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """The dashboard and browser tests leave a job running and read every registry: on a
    shared DB index another run's workers or FLUSHDB would break them (and they it)."""
    with PrivateRedis.started(tmp_path_factory.mktemp("dashboard-redis")) as server:
        yield server


@pytest.fixture
def dashboard_redis(dashboard_redis_server: PrivateRedis) -> Iterator[redis.Redis]:
    """The dashboard tests' server, empty before and after the test."""
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
        login = {"DASHBOARD_USERNAME": DASHBOARD_LOGIN[0], "DASHBOARD_PASSWORD": DASHBOARD_LOGIN[1], **env}
        stack = Stack.build(_stack_env(dashboard_redis_server.url, database_url, login), tmp_path, process_logs)
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.stop()
