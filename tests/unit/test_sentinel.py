"""Redis Sentinel URLs, the clients built from them, and REDIS_MIN_REPLICAS_ACK's WAIT path.

fakeredis knows no WAIT (it answers "unknown command"), so the WAIT path runs on a stub
pipeline here; tests/integration/test_sentinel.py runs it against real replicas.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask import Flask
from redis.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.support.migrations import upgrade
from trustcard import task_service
from trustcard.analyses import records
from trustcard.api.app import create_app
from trustcard.config import load_settings
from trustcard.config.errors import ConfigError
from trustcard.connections import (
    BlockingSentinelConnectionPool,
    redis_client,
    web_redis,
    worker_redis_url,
    worker_sentinel,
)
from trustcard.metrics.store import SUBMISSIONS_KEY, TASKS_ENDED_KEY
from trustcard.sentinel_url import SentinelURL, parse_sentinel_url
from trustcard.task_submission import REPLICA_ACK_TIMEOUT_MS, replicas_holding
from workers import storage
from workers.analysis_runner import run_stage

URL = "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380,sentinel-3/trustcard/2"


# --- the URL ---------------------------------------------------------------------


def test_a_sentinel_url_names_its_sentinels_service_and_db() -> None:
    assert parse_sentinel_url(URL) == SentinelURL(
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380), ("sentinel-3", 26379)), service="trustcard", db=2
    )


def test_a_sentinel_url_carries_the_masters_credentials_tls_and_the_sentinels_password() -> None:
    parsed = parse_sentinel_url("rediss+sentinel://app:p%40ss@h:1/main?sentinel_password=s3&ssl_cert_reqs=none")
    assert (parsed.username, parsed.password, parsed.tls, parsed.db) == ("app", "p@ss", True, 0)
    assert parsed.option("sentinel_password") == "s3"
    assert parsed.option("ssl_cert_reqs") == "none"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://h:26379", "names no service"),
        ("redis+sentinel://h:26379/", "names no service"),
        ("redis+sentinel://h:26379/main/x", "database 'x'"),
        ("redis+sentinel://h:26379/main/0/more", "more path"),
        ("redis+sentinel://h:port/main", "port that is not a number"),
        ("redis+sentinel://h:99999/main", "port that is not a number"),
        ("redis+sentinel://h:1,,h:2/main", "without a host"),
        ("redis+sentinel://h:1/main?socket_timeout=1", "unknown option 'socket_timeout'"),
    ],
)
def test_a_malformed_sentinel_url_stops_start_up_with_one_sentence_naming_the_setting(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"REDIS_URL": url})
    message = str(refused.value)
    assert message.startswith("REDIS_URL ") and problem in message, message
    assert message.count(". ") == 0 and message.endswith("."), message  # one sentence
    assert "\n" not in message


def test_a_sentinel_url_with_a_password_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"REDIS_URL": "redis+sentinel://:hunter2@h:1/"})
    assert "hunter2" not in str(refused.value)


def test_another_scheme_is_still_refused() -> None:
    with pytest.raises(ConfigError, match="redis\\+sentinel://"):
        load_settings({"REDIS_URL": "sentinel://h:1/main"})


# --- the clients -------------------------------------------------------------------


def test_every_client_of_a_sentinel_url_asks_the_sentinels_for_the_master() -> None:
    settings = load_settings({"REDIS_URL": URL})
    web = web_redis(settings)
    plain = redis_client(settings, socket_timeout=3)
    try:
        assert isinstance(web.connection_pool, BlockingSentinelConnectionPool)  # waits for a free connection
        assert web.connection_pool.max_connections == 100
        assert isinstance(plain.connection_pool, SentinelConnectionPool)
        for client in (web, plain):
            pool = client.connection_pool
            assert pool.service_name == "trustcard"
            assert pool.connection_kwargs["db"] == 2
            sentinels = pool.sentinel_manager.sentinels
            assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
                    for s in sentinels] == [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("sentinel-3", 26379)]
            assert sentinels[0].connection_pool.connection_kwargs["socket_connect_timeout"] == 1.0
        assert plain.connection_pool.connection_kwargs["socket_timeout"] == 3
    finally:
        web.close()
        plain.close()


def test_rq_worker_gets_rqs_sentinel_settings_instead_of_a_url() -> None:
    settings = load_settings({"REDIS_URL": "redis+sentinel://app:pw@h1:1,h2:2/main/3?sentinel_password=sp"})
    assert worker_redis_url(settings) is None  # RQ's CLI reads SENTINEL only when REDIS_URL is None
    assert worker_sentinel(settings) == {
        "INSTANCES": [("h1", 1), ("h2", 2)],
        "MASTER_NAME": "main",
        "DB": 3,
        "USERNAME": "app",
        "PASSWORD": "pw",
        "SSL": False,
        "CONNECTION_KWARGS": {},
        "SENTINEL_KWARGS": {"socket_connect_timeout": 1.0, "socket_timeout": 1.0, "password": "sp"},
    }
    assert worker_sentinel(load_settings({"REDIS_URL": "redis://h:1/0"})) is None


def test_rq_builds_the_worker_client_from_those_settings() -> None:
    from rq.cli.helpers import get_redis_from_config

    settings = load_settings({"REDIS_URL": URL})
    client = get_redis_from_config({"REDIS_URL": worker_redis_url(settings), "SENTINEL": worker_sentinel(settings)})
    try:
        assert isinstance(client.connection_pool, SentinelConnectionPool)
        assert client.connection_pool.service_name == "trustcard"
    finally:
        client.close()


def test_the_tls_settings_apply_to_rediss_sentinel_for_master_and_sentinels() -> None:
    settings = load_settings({"REDIS_URL": "rediss+sentinel://h:1/main", "REDIS_SSL_CERT_REQS": "none",
                              "REDIS_SSL_CA_CERTS": "/etc/ca.pem"})
    client = redis_client(settings)
    try:
        pool = client.connection_pool
        assert pool.connection_class is SentinelManagedSSLConnection
        assert pool.connection_kwargs["ssl_cert_reqs"] == "none"
        assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
        sentinel = pool.sentinel_manager.sentinels[0].connection_pool
        assert sentinel.connection_kwargs["ssl_cert_reqs"] == "none"
    finally:
        client.close()
    config = worker_sentinel(settings)
    assert config is not None and config["SSL"] is True
    assert config["CONNECTION_KWARGS"] == {"ssl_cert_reqs": "none", "ssl_ca_certs": "/etc/ca.pem"}


def test_the_urls_own_ssl_option_wins_over_the_setting_under_rediss_sentinel() -> None:
    settings = load_settings({"REDIS_URL": "rediss+sentinel://h:1/main?ssl_cert_reqs=optional",
                              "REDIS_SSL_CERT_REQS": "none"})
    config = worker_sentinel(settings)
    assert config is not None and config["CONNECTION_KWARGS"] == {"ssl_cert_reqs": "optional"}


# --- REDIS_MIN_REPLICAS_ACK: the WAIT path ----------------------------------------------


class StubPipeline:
    """Records what is queued; answers WAIT with `acknowledged`."""

    def __init__(self, acknowledged: int) -> None:
        self.acknowledged = acknowledged
        self.commands: list[tuple[Any, ...]] = []

    def __enter__(self) -> StubPipeline:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def hincrby(self, *args: Any) -> None:
        self.commands.append(("HINCRBY", *args))

    def wait(self, *args: Any) -> None:
        self.commands.append(("WAIT", *args))

    def execute(self) -> list[int]:
        return [7, self.acknowledged]


class StubConnection:
    def __init__(self, acknowledged: int) -> None:
        self.pipelines: list[tuple[StubPipeline, bool]] = []
        self.acknowledged = acknowledged

    def pipeline(self, transaction: bool = True) -> StubPipeline:
        pipeline = StubPipeline(self.acknowledged)
        self.pipelines.append((pipeline, transaction))
        return pipeline


def test_wait_follows_a_write_of_its_own_on_the_same_connection() -> None:
    connection = StubConnection(acknowledged=2)
    assert replicas_holding(connection, 2) == 2  # type: ignore[arg-type]
    [(pipeline, transaction)] = connection.pipelines
    assert transaction is False  # WAIT may not run inside MULTI (it would not block there)
    assert pipeline.commands == [("HINCRBY", SUBMISSIONS_KEY, "accepted", 0), ("WAIT", 2, REPLICA_ACK_TIMEOUT_MS)]


@pytest.fixture
def make_app(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> Iterator[Any]:
    apps: list[Flask] = []

    def build(**env: str) -> Flask:
        settings = load_settings({"DATABASE_URL": f"sqlite:///{tmp_path / 'unit.db'}", "SECRET_KEY": "unit", **env})
        app = create_app(settings, redis=fake_redis)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["trustcard.engine"].dispose()


def test_at_default_settings_a_submission_does_not_wait_for_replicas(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: Any) -> int:
        raise AssertionError("WAIT sent with REDIS_MIN_REPLICAS_ACK=0")

    monkeypatch.setattr(task_service, "replicas_holding", refuse)
    response = make_app().test_client().post("/tasks/test/add?x=1&y=2")
    assert response.status_code == 202, response.get_json()


def test_with_REDIS_MIN_REPLICAS_ACK_2_enough_replicas_answer_202(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []
    monkeypatch.setattr(task_service, "replicas_holding", lambda _connection, wanted: asked.append(wanted) or 2)
    response = make_app(REDIS_MIN_REPLICAS_ACK="2").test_client().post("/tasks/test/add?x=1&y=2")
    assert response.status_code == 202, response.get_json()
    assert asked == [2]


def test_with_REDIS_MIN_REPLICAS_ACK_1_too_few_replicas_answer_503_and_cancel_the_task(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(task_service, "replicas_holding", lambda _connection, _wanted: 0)
    client = make_app(REDIS_MIN_REPLICAS_ACK="1").test_client()
    response = client.post("/tasks/test/add?x=1&y=2", headers={"Idempotency-Key": "order-1"})
    body = response.get_json()
    assert response.status_code == 503, body
    assert body["error"] == "not_replicated" and response.headers["Retry-After"] == "2"
    assert "0 of 1" in body["message"] and "may still" in body["message"] and "404 or cancelled" in body["message"]
    task = client.get(f"/tasks/{body['task_id']}").get_json()
    assert task["status"] == "cancelled"  # written to the master, so cancelled rather than left to run
    monkeypatch.setattr(task_service, "replicas_holding", lambda _connection, _wanted: 1)
    again = client.post("/tasks/test/add?x=1&y=2", headers={"Idempotency-Key": "order-1"})
    assert again.status_code == 202 and again.get_json()["task_id"] != body["task_id"]  # the key was given up


def test_with_REDIS_MIN_REPLICAS_ACK_1_a_master_lost_during_wait_answers_503_not_500(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    def lost(*_: Any) -> int:
        raise RedisConnectionError("Connection closed by server.")

    monkeypatch.setattr(task_service, "replicas_holding", lost)
    response = make_app(REDIS_MIN_REPLICAS_ACK="1").test_client().post("/tasks/test/add?x=1&y=2")
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["error"] == "not_replicated" and "no answer" in response.get_json()["message"]


BATCH = {"tasks": [{"type": "test.add", "params": {"x": 1, "y": 2}}, {"type": "test.add", "params": {"x": 3, "y": 4}}]}


def test_with_REDIS_MIN_REPLICAS_ACK_1_a_confirmed_batch_answers_202_after_one_wait(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []
    monkeypatch.setattr(task_service, "replicas_holding", lambda _connection, wanted: asked.append(wanted) or 1)
    response = make_app(REDIS_MIN_REPLICAS_ACK="1").test_client().post("/tasks/batch", json=BATCH)
    assert response.status_code == 202, response.get_json()
    assert asked == [1]  # one WAIT covers the batch's one transaction


def test_with_REDIS_MIN_REPLICAS_ACK_1_an_unconfirmed_batch_answers_503_and_cancels_every_task(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(task_service, "replicas_holding", lambda _connection, _wanted: 0)
    client = make_app(REDIS_MIN_REPLICAS_ACK="1").test_client()
    response = client.post("/tasks/batch", json=BATCH)
    body = response.get_json()
    assert response.status_code == 503, body
    assert body["error"] == "not_replicated" and len(body["task_ids"]) == 2 and "batch's 2 tasks" in body["message"]
    for task_id in body["task_ids"]:
        assert client.get(f"/tasks/{task_id}").get_json()["status"] == "cancelled"


# --- REDIS_MIN_REPLICAS_ACK and /metrics: a refused submission is no accepted one ---------


def submission_counts(redis: fakeredis.FakeRedis) -> dict[str, int]:
    return {key.decode(): int(value) for key, value in redis.hgetall(SUBMISSIONS_KEY).items() if int(value)}


def test_a_submission_answered_not_replicated_is_counted_refused_not_accepted_and_its_cancel_no_end(
    make_app: Any, monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis
) -> None:
    monkeypatch.setattr(task_service, "replicas_holding", lambda _connection, _wanted: 0)
    client = make_app(REDIS_MIN_REPLICAS_ACK="1").test_client()
    with client.post("/tasks/test/add?x=1&y=2") as response:
        assert response.status_code == 503 and response.get_json()["error"] == "not_replicated"
    with client.post("/tasks/batch", json=BATCH) as response:
        assert response.status_code == 503 and response.get_json()["error"] == "not_replicated"
    assert submission_counts(fake_redis) == {"not_replicated": 3}  # a batch counts each of its tasks
    assert fake_redis.hgetall(TASKS_ENDED_KEY) == {}  # withdrawn, never accepted: no end either
    monkeypatch.setattr(task_service, "replicas_holding", lambda _connection, _wanted: 1)
    with client.post("/tasks/test/add?x=1&y=2") as response:
        assert response.status_code == 202
    with client.post("/tasks/batch", json=BATCH) as response:
        assert response.status_code == 202
    assert submission_counts(fake_redis) == {"not_replicated": 3, "accepted": 3}  # counted once confirmed


def test_at_default_settings_a_submission_is_counted_accepted_in_its_enqueue_transaction(
    make_app: Any, fake_redis: fakeredis.FakeRedis
) -> None:
    client = make_app().test_client()
    with client.post("/tasks/test/add?x=1&y=2") as response:
        assert response.status_code == 202
        assert submission_counts(fake_redis) == {"accepted": 1}  # before the answer is even closed


# --- REDIS_MIN_REPLICAS_ACK for analyses: the first stage's job confirmed, or 503 --------

ANALYSED = "https://www.instagram.com/p/REPLICA1/"


@pytest.fixture
def analyses_app(tmp_path: Path, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Apps with the analyses' tables migrated; the stage jobs, run here, use the same database."""
    database = f"sqlite:///{tmp_path / 'analyses.db'}"
    upgrade(database)
    monkeypatch.setenv("DATABASE_URL", database)
    monkeypatch.setattr(storage, "_engine", None)
    apps: list[Flask] = []

    def build(**env: str) -> Flask:
        app = create_app(load_settings({"DATABASE_URL": database, "SECRET_KEY": "unit", **env}), redis=fake_redis)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["trustcard.engine"].dispose()
    storage.engine().dispose()
    monkeypatch.setattr(storage, "_engine", None)


def first_job_id(analysis: dict[str, Any], app: Flask) -> str:
    row = records.read(app.extensions["trustcard.engine"], analysis["id"])
    assert row is not None
    return str(row.stages[0]["job_id"])


def test_at_default_settings_an_analysis_does_not_wait_for_replicas(
    analyses_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_: Any) -> int:
        raise AssertionError("WAIT sent with REDIS_MIN_REPLICAS_ACK=0")

    monkeypatch.setattr(task_service, "replicas_holding", refuse)
    response = analyses_app().test_client().post("/analyses", json={"url": ANALYSED})
    assert response.status_code == 202, response.get_json()


def test_with_REDIS_MIN_REPLICAS_ACK_1_a_confirmed_analysis_answers_202_after_one_wait(
    analyses_app: Any, monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis
) -> None:
    asked: list[int] = []
    monkeypatch.setattr(task_service, "replicas_holding", lambda _connection, wanted: asked.append(wanted) or 1)
    app = analyses_app(REDIS_MIN_REPLICAS_ACK="1")
    response = app.test_client().post("/analyses", json={"url": ANALYSED})
    assert response.status_code == 202, response.get_json()
    assert asked == [1] and response.get_json()["status"] == "pending"
    assert Job.fetch(first_job_id(response.get_json(), app), connection=fake_redis,
                     serializer=JSONSerializer).get_status() == "queued"
    again = app.test_client().post("/analyses", json={"url": ANALYSED})
    assert again.status_code == 200 and asked == [1]  # the analysis under way: nothing new to confirm


def test_with_REDIS_MIN_REPLICAS_ACK_1_an_unconfirmed_analysis_answers_503_reads_failed_and_never_runs(
    analyses_app: Any, monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis
) -> None:
    monkeypatch.setattr(task_service, "replicas_holding", lambda _connection, _wanted: 0)
    app = analyses_app(REDIS_MIN_REPLICAS_ACK="1")
    client = app.test_client()
    response = client.post("/analyses", json={"url": ANALYSED}, headers={"Idempotency-Key": "post-1"})
    body = response.get_json()
    assert response.status_code == 503, body
    assert body["error"] == "not_replicated" and response.headers["Retry-After"] == "2"
    assert "0 of 1" in body["message"] and "reads failed" in body["message"]
    analysis = client.get(f"/analyses/{body['analysis_id']}").get_json()
    assert analysis["status"] == "failed" and analysis["failed_stage"] == "content"
    assert analysis["error"].startswith("Not accepted: Redis replicas did not confirm")
    job_id = first_job_id(analysis, app)
    assert client.get(f"/tasks/{job_id}").get_json()["status"] == "cancelled"  # not left to run on this master
    assert fake_redis.hgetall(TASKS_ENDED_KEY) == {}  # a withdrawn stage job is no end for /metrics
    # a failover that brings the job back uncancelled: it finds the analysis not under way
    assert run_stage(analysis["id"], "content") == {
        "analysis_id": analysis["id"], "stage": "content", "ran": False, "reason": "analysis not under way"}
    assert client.get(f"/analyses/{analysis['id']}").get_json()["status"] == "failed"
    # submitted again once replicas answer: a new analysis (the failed one is not under way), same key
    monkeypatch.setattr(task_service, "replicas_holding", lambda _connection, _wanted: 1)
    again = client.post("/analyses", json={"url": ANALYSED}, headers={"Idempotency-Key": "post-1"})
    assert again.status_code == 202 and again.get_json()["id"] != analysis["id"]


def test_with_REDIS_MIN_REPLICAS_ACK_1_an_unconfirmed_retry_answers_503_and_can_be_retried(
    analyses_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(task_service, "replicas_holding", lambda _connection, _wanted: 0)
    client = analyses_app(REDIS_MIN_REPLICAS_ACK="1").test_client()
    analysis_id = client.post("/analyses", json={"url": ANALYSED}).get_json()["analysis_id"]
    response = client.post(f"/analyses/{analysis_id}/retry")
    assert response.status_code == 503 and response.get_json()["error"] == "not_replicated"
    assert response.get_json()["analysis_id"] == analysis_id and "not resumed" in response.get_json()["message"]
    assert client.get(f"/analyses/{analysis_id}").get_json()["error"].startswith("Not resumed:")
    monkeypatch.setattr(task_service, "replicas_holding", lambda _connection, _wanted: 1)
    resumed = client.post(f"/analyses/{analysis_id}/retry")
    assert resumed.status_code == 202 and resumed.get_json()["status"] == "pending"


def test_with_REDIS_MIN_REPLICAS_ACK_1_a_master_lost_during_an_analysis_wait_answers_503_not_500(
    analyses_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    def lost(*_: Any) -> int:
        raise RedisConnectionError("Connection closed by server.")

    monkeypatch.setattr(task_service, "replicas_holding", lost)
    client = analyses_app(REDIS_MIN_REPLICAS_ACK="1").test_client()
    response = client.post("/analyses", json={"url": ANALYSED})
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["error"] == "not_replicated" and "no answer" in response.get_json()["message"]
    assert client.get(f"/analyses/{response.get_json()['analysis_id']}").get_json()["status"] == "failed"
