"""The service as the integration tests run it: an app on real settings (driven through
Flask's test client), `rq worker` processes from the Procfile's `worker:` line, and
gunicorn from its `web:` line. The tests prove the Procfile works by running its lines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from rq import Queue
from rq.worker import Worker

from tests.support.ports import free_port, port_answers
from tests.support.processes import ProcessGroup, children_of, process_table
from tests.support.procfile import procfile_command
from tests.support.waiting import wait_until
from trustcard.api.app import create_app
from trustcard.catalogue import QUEUE_NAMES
from trustcard.config import Settings, load_settings
from trustcard.connections import redis_client

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
"""The DB index of the shared Redis that the integration tests may empty."""
POSTGRES_ADMIN_DSN = os.environ.get("TEST_POSTGRES_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
POSTGRES_SERVER_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
"""`postgresql://`, the scheme SQLAlchemy 2.1 maps to psycopg 3: the app must rewrite it."""
TERMINAL = ("completed", "failed", "cancelled")
DASHBOARD_LOGIN = ("admin", "dash-pass")
"""The dashboard's login in the dashboard and browser tests' stacks."""
START_TIMEOUT = 30.0


@dataclass
class WorkerProcess(ProcessGroup):
    """One `rq worker` process started from the Procfile's `worker:` line."""

    @classmethod
    def start_worker(cls, env: dict[str, str], log_path: Path) -> WorkerProcess:
        group = ProcessGroup.start(log_path.stem, procfile_command("worker"), {**os.environ, **env}, log_path)
        return cls(group.name, group.process, group.log_path)

    def wait_registered(self, settings: Settings, timeout: float = START_TIMEOUT) -> None:
        connection = redis_client(settings)  # the service's own factory: TLS settings applied
        try:
            wait_until(
                lambda: self.poll() is not None or any(w.pid == self.pid for w in Worker.all(connection=connection)),
                timeout,
                f"worker {self.pid} to register",
            )
        finally:
            connection.close()
        assert self.poll() is None, self.log()

    def children(self) -> set[int]:
        """Process ids whose parent is this worker (its job process)."""
        return children_of(self.pid)

    def horse(self) -> int | None:
        """The job process, if one runs: it lives in a process group of its own."""
        table = process_table()
        horses = [pid for pid in self.children() if pid in table and table[pid].group == pid]
        assert len(horses) <= 1, horses
        return horses[0] if horses else None


@dataclass
class WebProcess(ProcessGroup):
    """The Procfile's `web:` line, run for real: gunicorn on a spare port, one process."""

    port: int = 0

    @classmethod
    def start_web(cls, env: dict[str, str], log_dir: Path) -> WebProcess:
        port = free_port()
        log_path = log_dir / f"web-{port}.log"
        group = ProcessGroup.start(
            log_path.stem, procfile_command("web"),
            {**os.environ, **env, "PORT": str(port), "WEB_CONCURRENCY": "1"}, log_path,
        )
        web = cls(group.name, group.process, group.log_path, port)
        try:
            wait_until(lambda: web.poll() is not None or port_answers(port), START_TIMEOUT,
                       f"gunicorn on port {port}", interval=0.1)
        except BaseException:
            web.stop()
            raise
        assert web.poll() is None, web.log()
        return web

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, grace: float = 30) -> int | None:
        return super().stop(grace)


@dataclass
class Stack:
    """Settings, an app on them (Flask test client), and the workers started for them."""

    env: dict[str, str]
    settings: Settings
    app: Flask
    client: FlaskClient
    log_dir: Path
    logs: list[Path]
    """Log files of the processes started for it; a failing test prints them."""
    workers: list[WorkerProcess] = field(default_factory=list)

    @classmethod
    def build(cls, env: dict[str, str], log_dir: Path, logs: list[Path]) -> Stack:
        settings = load_settings(env)
        app = create_app(settings)
        return cls(env, settings, app, app.test_client(), log_dir, logs)

    def for_test(self, logs: list[Path], timeout: float = START_TIMEOUT) -> Stack:
        """This stack, shared, handed to one more test: its logs go with that test's report,
        its workers must be up, and what tests before it left running or queued ends first."""
        logs.extend(self.logs)
        assert all(worker.poll() is None for worker in self.workers), "a test before stopped a shared worker"
        connection = self.app.extensions["trustcard.redis"]
        queues = [Queue(name, connection=connection) for name in QUEUE_NAMES]
        wait_until(
            lambda: self.client.get("/tasks/").get_json()["count"] == 0 and not any(queue.count for queue in queues),
            timeout,
            "the tasks that tests before this one left to end",
            interval=0.1,
        )
        return self

    def start_worker(self, wait: bool = True, **extra_env: str) -> WorkerProcess:
        """A worker from the Procfile line on this stack's settings; with `wait`, once rq lists it."""
        log_path = self.log_dir / f"worker-{len(self.logs)}.log"
        self.logs.append(log_path)
        worker = WorkerProcess.start_worker({**self.env, **extra_env}, log_path)
        self.workers.append(worker)
        if wait:
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
        """Tear-down: the workers killed outright (tests of a graceful stop signal them themselves)."""
        try:
            for worker in self.workers:
                worker.kill()
        finally:
            self.app.extensions["trustcard.redis"].close()
            self.app.extensions["trustcard.engine"].dispose()
