"""Redis over TLS (`rediss://`), as managed Redis plans serve it, for every part of the service.

Heroku Redis serves a self-signed certificate: at the default `REDIS_SSL_CERT_REQS`
(required) it must be refused, clearly; `REDIS_SSL_CERT_REQS=none` or the URL's own
`?ssl_cert_reqs=none` must make the web, the workers, RQ's scheduler and the dashboard all
work on it; and a private CA given in `REDIS_SSL_CA_CERTS` must keep verification on.
Each server here is TLS-only, so a part that forgot TLS cannot get through on plain TCP.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import Worker

from tests.support.ports import free_port
from tests.support.stack import Stack, WebProcess, WorkerProcess
from tests.support.waiting import wait_until
from tests.support.platform_stack import Certificate, TlsRedis, make_certificates

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

DASHBOARD_PASSWORD = "tls-dashboard-secret"
CERTIFICATE_REFUSED = re.compile(r"CERTIFICATE_VERIFY_FAILED|certificate verify failed", re.IGNORECASE)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Certificate, Certificate]:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


def _server(tmp_path_factory: pytest.TempPathFactory, certificate: Certificate, name: str) -> Iterator[TlsRedis]:
    server = TlsRedis(free_port(), tmp_path_factory.mktemp(name), certificate)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def self_signed_server(
    tmp_path_factory: pytest.TempPathFactory, certificates: tuple[Certificate, Certificate]
) -> Iterator[TlsRedis]:
    """A TLS-only Redis with a self-signed certificate, like Heroku Redis."""
    yield from _server(tmp_path_factory, certificates[0], "self-signed-redis")


@pytest.fixture(scope="module")
def ca_signed_server(
    tmp_path_factory: pytest.TempPathFactory, certificates: tuple[Certificate, Certificate]
) -> Iterator[TlsRedis]:
    """A TLS-only Redis whose certificate a private CA signed."""
    yield from _server(tmp_path_factory, certificates[1], "ca-signed-redis")


@pytest.fixture
def server_client(process_logs: list[Path]) -> Iterator[Callable[[TlsRedis], redis.Redis]]:
    """The test's own (verifying) client of a server, emptied for the test; its log is shown on failure."""
    clients: list[redis.Redis] = []

    def connect(server: TlsRedis) -> redis.Redis:
        process_logs.append(server.log_path)
        client = server.client()
        client.flushall()
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def _request(web: WebProcess, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else None
    finally:
        connection.close()


def _env(redis_url: str, database_url: str, **settings: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "DATABASE_URL": database_url, "SECRET_KEY": "integration", **settings}


def _assert_every_part_works(web: WebProcess, worker: WorkerProcess, client: redis.Redis) -> None:
    """Web, worker, RQ's scheduler (test.fail's retry a second later) and the dashboard, on TLS."""
    status, health = _request(web, "GET", "/health")
    assert status == 200, health
    assert health["redis"] == "connected" and health["workers"] == 1, health

    status, submitted = _request(web, "POST", "/tasks/test/add?x=7&y=8")
    assert status == 202, submitted
    done = wait_until(
        lambda: (view := _request(web, "GET", f"/tasks/{submitted['task_id']}")[1])["status"] == "completed" and view,
        30,
        "test.add to complete on the TLS Redis",
    )
    assert done["result"] == 15 and done["error"] is None

    status, failing = _request(web, "POST", "/tasks/test/fail?message=tls-boom")
    assert status == 202, failing
    task_id = failing["task_id"]
    scheduled = ScheduledJobRegistry("analysis", connection=client, serializer=JSONSerializer)
    wait_until(lambda: task_id in scheduled.get_job_ids(), 15, "test.fail's retry to be scheduled")
    failed = wait_until(
        lambda: (view := _request(web, "GET", f"/tasks/{task_id}")[1])["status"] == "failed" and view,
        30,
        "test.fail to end failed after its retry through the scheduler",
    )
    assert "tls-boom" in failed["error"], failed
    assert task_id not in scheduled.get_job_ids()
    runs = [line for line in worker.log().splitlines() if task_id in line and "received" in line]
    assert len(runs) == 2, f"test.fail should have run twice (once, then its retry): {runs}"

    login = base64.b64encode(f"admin:{DASHBOARD_PASSWORD}".encode()).decode()
    status, queues = _request(web, "GET", "/rq/0/data/queues.json", {"Authorization": f"Basic {login}"})
    assert status == 200, queues
    assert "analysis" in json.dumps(queues), queues
    status, workers = _request(web, "GET", "/rq/0/data/workers.json", {"Authorization": f"Basic {login}"})
    assert status == 200 and len(workers["workers"]) == 1, workers


def test_a_self_signed_certificate_is_refused_at_the_default_cert_reqs(
    self_signed_server: TlsRedis,
    server_client: Callable[[TlsRedis], redis.Redis],
    database_url: str,
    make_stack: Callable[..., Stack],
    start_web: Callable[[dict[str, str]], WebProcess],
) -> None:
    client = server_client(self_signed_server)
    env = _env(self_signed_server.url, database_url)
    web = start_web(env)
    status, health = _request(web, "GET", "/health")
    assert status == 503 and health["redis"] == "unreachable", health

    stack = make_stack(redis_url=self_signed_server.url)
    log_path = stack.log_dir / "refused-worker.log"
    stack.logs.append(log_path)
    worker = WorkerProcess.start_worker(stack.env, log_path)
    stack.workers.append(worker)
    wait_until(lambda: CERTIFICATE_REFUSED.search(worker.log()), 30, "the worker to log the refused certificate")
    assert Worker.all(connection=client) == [], "a worker registered through a certificate it should refuse"
    assert "Listening on" not in worker.log(), worker.log()
    assert "REDIS_SSL_CERT_REQS" in worker.log(), "the refusal should name the setting that fixes it"


def test_redis_ssl_cert_reqs_none_lets_web_worker_scheduler_and_dashboard_work(
    self_signed_server: TlsRedis,
    server_client: Callable[[TlsRedis], redis.Redis],
    database_url: str,
    make_stack: Callable[..., Stack],
    start_web: Callable[[dict[str, str]], WebProcess],
) -> None:
    client = server_client(self_signed_server)
    settings = {"REDIS_SSL_CERT_REQS": "none", "DASHBOARD_PASSWORD": DASHBOARD_PASSWORD}
    stack = make_stack(redis_url=self_signed_server.url, **settings)
    worker = stack.start_worker()
    web = start_web(_env(self_signed_server.url, database_url, **settings))
    _assert_every_part_works(web, worker, client)


def test_the_urls_own_ssl_cert_reqs_none_lets_web_worker_scheduler_and_dashboard_work(
    self_signed_server: TlsRedis,
    server_client: Callable[[TlsRedis], redis.Redis],
    database_url: str,
    make_stack: Callable[..., Stack],
    start_web: Callable[[dict[str, str]], WebProcess],
) -> None:
    client = server_client(self_signed_server)
    url = f"{self_signed_server.url}?ssl_cert_reqs=none"
    stack = make_stack(redis_url=url, DASHBOARD_PASSWORD=DASHBOARD_PASSWORD)
    worker = stack.start_worker()
    web = start_web(_env(url, database_url, DASHBOARD_PASSWORD=DASHBOARD_PASSWORD))
    _assert_every_part_works(web, worker, client)


def test_redis_ssl_ca_certs_verifies_a_certificate_that_ca_signed(
    ca_signed_server: TlsRedis,
    self_signed_server: TlsRedis,
    server_client: Callable[[TlsRedis], redis.Redis],
    database_url: str,
    make_stack: Callable[..., Stack],
    start_web: Callable[[dict[str, str]], WebProcess],
) -> None:
    client = server_client(ca_signed_server)
    settings = {"REDIS_SSL_CA_CERTS": str(ca_signed_server.certificate.ca), "DASHBOARD_PASSWORD": DASHBOARD_PASSWORD}
    stack = make_stack(redis_url=ca_signed_server.url, **settings)
    worker = stack.start_worker()
    web = start_web(_env(ca_signed_server.url, database_url, **settings))
    _assert_every_part_works(web, worker, client)

    # Verification stayed on: the same setting refuses a certificate that CA did not sign.
    elsewhere = start_web(_env(self_signed_server.url, database_url, **settings))
    status, health = _request(elsewhere, "GET", "/health")
    assert status == 503 and health["redis"] == "unreachable", health
