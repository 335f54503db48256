"""Callback-URL: which URLs are refused and why, the signature a receiver checks, the state in
the task's view, and the delivery job queued with every end of a task (fakeredis)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import now

from trustcard.api.app import create_app
from trustcard.callback_urls import CallbackURLRefused, address_problem, check_callback_url
from trustcard.callbacks import CALLBACK_FIELD, JSONCommandRecorder, delivery_commands, signature
from trustcard.catalogue import WEBHOOK_DELIVERY
from trustcard.config import load_settings
from trustcard import task_ends
from trustcard.metrics import store
from trustcard.metrics.outcomes import TaskOutcome
from tests.unit.test_api import RoundTrips
from workers.supervisor import JobProcessSupervisor

SECRET = "whsec-unit-test"
PUBLIC = "93.184.216.34"


def public_resolver(host: str, port: int) -> list[str]:
    return [PUBLIC]


def refusal(url: str, resolver: object = public_resolver) -> str:
    with pytest.raises(CallbackURLRefused) as refused:
        check_callback_url(url, allow_private=False, resolver=resolver)  # type: ignore[arg-type]
    return str(refused.value)


# --- which URLs are refused -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1/hook", "loopback"),
        ("http://127.8.9.10:8080/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://10.0.0.7/hook", "private"),
        ("http://172.16.0.1/hook", "private"),
        ("http://172.31.255.254/hook", "private"),
        ("http://192.168.1.20/hook", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://[fd12:3456::1]/hook", "private"),
        ("http://224.0.0.251/hook", "multicast"),
        ("http://[ff02::1]/hook", "multicast"),
        ("http://240.0.0.1/hook", "reserved"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://[::]/hook", "unspecified"),
        ("http://[::ffff:127.0.0.1]/hook", "IPv6 form of 127.0.0.1, a loopback"),
        ("http://[::ffff:169.254.169.254]/hook", "IPv6 form of 169.254.169.254, a link-local"),
        ("http://[::ffff:10.1.2.3]/hook", "IPv6 form of 10.1.2.3, a private"),
        ("http://[2002:7f00:1::]/hook", "IPv6 form of 127.0.0.1"),  # 6to4
        ("http://[64:ff9b::a9fe:a9fe]/hook", "IPv6 form of 169.254.169.254"),  # NAT64
        ("http://100.64.0.1/hook", "not a public address"),  # carrier-grade NAT
    ],
)
def test_addresses_that_are_not_public_are_refused(url: str, why: str) -> None:
    message = refusal(url, lambda host, port: [host])  # an address literal resolves to itself
    assert why in message and "WEBHOOK_ALLOW_PRIVATE" in message


def test_localhost_is_refused_by_what_it_resolves_to() -> None:
    message = refusal("http://localhost:9000/hook", resolver=lambda host, port: ["127.0.0.1", "::1"])
    assert "'localhost' resolves to 127.0.0.1" in message and "loopback" in message


def test_localhost_is_refused_with_the_real_resolver() -> None:
    with pytest.raises(CallbackURLRefused, match="loopback"):
        check_callback_url("http://localhost/hook", allow_private=False)


def test_a_name_with_one_private_address_among_public_ones_is_refused() -> None:
    """Every address must be public: a connection may go to any of them."""
    message = refusal("https://hooks.example.com/in", resolver=lambda host, port: [PUBLIC, "10.9.8.7"])
    assert "'hooks.example.com' resolves to 10.9.8.7" in message and "private" in message


def test_a_name_that_does_not_resolve_is_refused() -> None:
    def nothing(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    assert "does not resolve" in refusal("https://nowhere.invalid/in", nothing)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example.com/in", "scheme must be http or https, not 'ftp'"),
        ("javascript:alert(1)", "scheme must be http or https"),
        ("hooks.example.com/in", "scheme must be http or https, not 'missing'"),
        ("file:///etc/passwd", "scheme must be http or https"),
        ("https://user:secret@hooks.example.com/in", "credentials"),
        ("https://user@hooks.example.com/in", "credentials"),
        ("https:///in", "no host"),
        ("https://hooks.example.com:99999/in", "not a valid URL"),
        ("https://hooks.example.com/in put", "spaces or control characters"),
        ("https://hooks.example.com/in\r\nX-Evil: 1", "spaces or control characters"),
        ("https://hooks.exämple.com/in", "ASCII"),
        ("https://hooks.example.com/" + "a" * 2048, "the limit is 2048"),
    ],
)
def test_malformed_urls_are_refused_with_the_reason(url: str, why: str) -> None:
    assert why in refusal(url)


def test_a_public_url_gives_its_target() -> None:
    target = check_callback_url("HTTPS://Hooks.Example.com/in?x=1#frag", allow_private=False, resolver=public_resolver)
    assert (target.scheme, target.host, target.port, target.path, target.addresses) == (
        "https", "hooks.example.com", 443, "/in?x=1", (PUBLIC,)
    )
    assert check_callback_url("http://[2606:4700::1111]:8080", allow_private=False,
                              resolver=lambda host, port: [host]).port == 8080
    assert address_problem("8.8.8.8") is None and address_problem("2606:4700::1111") is None


def test_webhook_allow_private_lets_loopback_and_private_addresses_through() -> None:
    for address in ("127.0.0.1", "10.0.0.7", "169.254.169.254"):
        target = check_callback_url(f"http://{address}:8080/hook", allow_private=True,
                                    resolver=lambda host, port: [host])
        assert target.addresses == (address,)
    with pytest.raises(CallbackURLRefused, match="credentials"):  # the URL's shape is still checked
        check_callback_url("http://u:p@127.0.0.1/", allow_private=True)


# --- the signature ----------------------------------------------------------------------------


def verify(header: str, body: bytes, secret: str, tolerance: int = 300) -> bool:
    """What a receiver does, with the standard library only."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    timestamp, sent = fields["t"], fields["v1"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, sent)


def test_the_signature_verifies_with_the_secret_and_only_for_the_same_body() -> None:
    body = json.dumps({"task_id": "abc", "status": "completed"}).encode()
    header = signature(SECRET, body, int(time.time()))
    assert header.startswith("t=") and ",v1=" in header and len(header.split("v1=")[1]) == 64
    assert verify(header, body, SECRET)
    assert not verify(header, body + b" ", SECRET)
    assert not verify(header, body, "another-secret")
    assert not verify(signature(SECRET, body, int(time.time()) - 3600), body, SECRET)  # a replay


# --- submissions through the API --------------------------------------------------------------


def make_app(tmp_path: Path, fake_redis: fakeredis.FakeRedis, **environment: str) -> Iterator[Flask]:
    settings = load_settings(
        {"DATABASE_URL": f"sqlite:///{tmp_path / 'unit.db'}", "SECRET_KEY": "unit-test", **environment}
    )
    application = create_app(settings, redis=fake_redis)
    application.config["TESTING"] = True
    yield application
    application.extensions["trustcard.engine"].dispose()


@pytest.fixture
def signed_app(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> Iterator[Flask]:
    yield from make_app(tmp_path, fake_redis, WEBHOOK_SECRET=SECRET)


@pytest.fixture
def signed_private_app(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> Iterator[Flask]:
    yield from make_app(tmp_path, fake_redis, WEBHOOK_SECRET=SECRET, WEBHOOK_ALLOW_PRIVATE="1")


def test_without_webhook_secret_a_callback_is_refused_and_nothing_is_queued(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    answer = client.post("/tasks/test/add?x=1&y=2", headers={"Callback-URL": "https://hooks.example.com/in"})
    assert answer.status_code == 422
    body = answer.get_json()
    assert body["error"] == "validation_error" and body["problems"][0]["parameter"] == "Callback-URL"
    assert "WEBHOOK_SECRET" in body["message"]
    assert fake_redis.llen("rq:queue:analysis") == 0


def test_without_a_callback_the_view_says_null(client: FlaskClient) -> None:
    task = client.post("/tasks/test/add?x=1&y=2").get_json()
    assert task["callback"] is None
    assert client.get(f"/tasks/{task['task_id']}").get_json()["callback"] is None


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9000/hook", "http://169.254.169.254/latest/meta-data/", "http://localhost/hook",
            "http://[::ffff:192.168.0.1]/", "ftp://example.com/", ""],
)
def test_with_webhook_secret_a_refused_callback_url_is_422_before_anything_is_queued(
    signed_app: Flask, fake_redis: fakeredis.FakeRedis, url: str
) -> None:
    answer = signed_app.test_client().post("/tasks/test/add?x=1&y=2", headers={"Callback-URL": url})
    assert answer.status_code == 422, answer.get_json()
    body = answer.get_json()
    assert body["message"].startswith("Callback-URL is refused: ")
    assert body["problems"][0]["parameter"] == "Callback-URL"
    assert fake_redis.llen("rq:queue:analysis") == 0 and not fake_redis.keys("rq:job:*")


def test_with_webhook_secret_and_webhook_allow_private_the_callback_is_kept_pending(
    signed_private_app: Flask, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = signed_private_app.test_client()
    url = "http://127.0.0.1:9000/hook"
    client.post("/tasks/test/add?x=0&y=0", headers={"Callback-URL": url})  # learns Redis's version
    round_trips = RoundTrips(monkeypatch, fake_redis)
    task = client.post("/tasks/test/add?x=1&y=2", headers={"Callback-URL": url}).get_json()
    assert round_trips.count == 1  # no extra round trip: the state goes in the admission script with the job
    pending = {"url": url, "status": "pending", "attempts": 0, "last_error": None}
    assert task["callback"] == pending
    round_trips.count = 0
    assert client.get(f"/tasks/{task['task_id']}").get_json()["callback"] == pending
    assert round_trips.count == 1  # the state is a field of the job's hash
    job = Job.fetch(task["task_id"], connection=fake_redis, serializer=JSONSerializer)
    assert job.meta["callback_url"] == url


def test_the_same_idempotency_key_with_another_callback_is_409(signed_private_app: Flask) -> None:
    client = signed_private_app.test_client()
    key = {"Idempotency-Key": "order-7"}
    first = client.post("/tasks/test/add?x=1&y=2", headers={**key, "Callback-URL": "http://127.0.0.1:1/a"})
    again = client.post("/tasks/test/add?x=1&y=2", headers={**key, "Callback-URL": "http://127.0.0.1:1/a"})
    other = client.post("/tasks/test/add?x=1&y=2", headers={**key, "Callback-URL": "http://127.0.0.1:1/b"})
    assert first.status_code == again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409


def test_clients_cannot_submit_the_delivery_job(signed_app: Flask) -> None:
    client = signed_app.test_client()
    assert client.post("/tasks/webhooks/deliver", json={"task_id": "x", "url": "https://e.com"}).status_code == 404
    paths = client.get("/openapi.json").get_json()["paths"]
    assert not [path for path in paths if "webhooks" in path]


# --- the delivery job, queued with each end ---------------------------------------------------


def submitted_with_callback(app: Flask, url: str = "http://127.0.0.1:9000/hook") -> str:
    answer = app.test_client().post("/tasks/test/fail?message=boom", headers={"Callback-URL": url})
    assert answer.status_code == 202
    return str(answer.get_json()["task_id"])


def delivery_jobs(connection: fakeredis.FakeRedis) -> list[Job]:
    ids = [raw.decode() for raw in connection.lrange("rq:queue:webhooks", 0, -1)]
    return [Job.fetch(job_id, connection=connection, serializer=JSONSerializer) for job_id in ids]


def test_no_callback_no_delivery_commands(fake_redis: fakeredis.FakeRedis) -> None:
    job = Queue("analysis", connection=fake_redis, serializer=JSONSerializer).enqueue_call(
        "workers.diagnostics.add", kwargs={"x": 1, "y": 2}, meta={"job_type": "test.add"}
    )
    assert delivery_commands(job) == []
    assert not any("webhooks" in str(command) for command in task_ends.job_end_commands(job, TaskOutcome.COMPLETED))


def test_the_end_commands_queue_a_delivery_job_that_rq_reads_back(
    signed_private_app: Flask, fake_redis: fakeredis.FakeRedis
) -> None:
    task_id = submitted_with_callback(signed_private_app)
    job = Job.fetch(task_id, connection=fake_redis, serializer=JSONSerializer)
    commands = task_ends.job_end_commands(job, TaskOutcome.COMPLETED, timed=False)
    json.dumps(commands)  # they travel as JSON into the end's Lua script
    assert store.run_count(fake_redis, commands)
    [delivery] = delivery_jobs(fake_redis)
    assert delivery.func_name == WEBHOOK_DELIVERY.function == "workers.webhooks.deliver"
    assert delivery.kwargs == {"task_id": task_id, "url": "http://127.0.0.1:9000/hook"}
    assert delivery.get_status() == JobStatus.QUEUED and delivery.origin == "webhooks"
    assert delivery.retries_left == 10 and delivery.retry_intervals == list(WEBHOOK_DELIVERY.retry_backoff)
    assert delivery.timeout == WEBHOOK_DELIVERY.soft_timeout and delivery.meta["hard_timeout"] == 30
    assert b"rq:queue:webhooks" in fake_redis.smembers("rq:queues")


def test_a_task_failing_for_good_queues_its_delivery_in_rqs_failure_transaction(
    signed_private_app: Flask, fake_redis: fakeredis.FakeRedis
) -> None:
    """test.fail retries once: the retry is no end (no delivery); the final failure is."""
    task_id = submitted_with_callback(signed_private_app)
    queue = Queue("analysis", connection=fake_redis, serializer=JSONSerializer)
    worker = JobProcessSupervisor([queue], connection=fake_redis)
    for _ in range(2):
        job = Job.fetch(task_id, connection=fake_redis, serializer=JSONSerializer)
        with fake_redis.pipeline() as pipeline:
            job.prepare_for_execution(worker.name, pipeline)
            pipeline.execute()
        job.started_at, job.ended_at = now() - timedelta(seconds=0.1), now()
        assert delivery_jobs(fake_redis) == []
        worker.handle_job_failure(job, queue, exc_string="DeliberateFailure: boom")
    assert job.get_status(refresh=True) == JobStatus.FAILED
    [delivery] = delivery_jobs(fake_redis)
    assert delivery.kwargs["task_id"] == task_id


def test_cancelling_a_waiting_task_queues_its_delivery_and_resets_the_state(
    signed_private_app: Flask, fake_redis: fakeredis.FakeRedis
) -> None:
    task_id = submitted_with_callback(signed_private_app)
    fake_redis.hset(f"rq:job:{task_id}", CALLBACK_FIELD, json.dumps(
        {"url": "http://127.0.0.1:9000/hook", "status": "delivered", "attempts": 1, "last_error": None}
    ))  # as a delivery of an earlier run left it
    client = signed_private_app.test_client()
    assert client.delete(f"/tasks/{task_id}").get_json()["status"] == "cancelled"
    assert [job.kwargs["task_id"] for job in delivery_jobs(fake_redis)] == [task_id]
    assert client.get(f"/tasks/{task_id}").get_json()["callback"]["status"] == "pending"


def test_the_recorder_refuses_what_cannot_travel_as_json() -> None:
    recorder = JSONCommandRecorder()
    recorder.hset("key", "field", b"text")
    assert recorder.commands == [("HSET", "key", "field", "text")]
    with pytest.raises(TypeError):
        recorder.hset("key", "field", object())  # type: ignore[arg-type]


# --- one delivery attempt's outcome in the task's view ------------------------------------------


def test_the_last_failed_attempt_marks_the_callback_failed(
    signed_private_app: Flask, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The eleventh attempt (no retries left) gives up: status failed, every attempt counted.
    The worker's settings refuse loopback here (WEBHOOK_ALLOW_PRIVATE unset), so it fails
    without any network."""
    from workers import webhooks

    task_id = submitted_with_callback(signed_private_app)
    job = Job.fetch(task_id, connection=fake_redis, serializer=JSONSerializer)
    assert store.run_count(fake_redis, delivery_commands(job))
    [delivery] = delivery_jobs(fake_redis)
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    monkeypatch.delenv("WEBHOOK_ALLOW_PRIVATE", raising=False)
    monkeypatch.setattr(webhooks, "get_current_job", lambda: delivery)
    client = signed_private_app.test_client()
    for retries_left, status in ((10, "retrying"), (0, "failed")):
        delivery.retries_left = retries_left
        with pytest.raises(webhooks.DeliveryFailed, match="refused at delivery"):
            webhooks.deliver(**delivery.kwargs)
        callback = client.get(f"/tasks/{task_id}").get_json()["callback"]
        assert callback["status"] == status and "loopback" in callback["last_error"]
    assert callback["attempts"] == WEBHOOK_DELIVERY.retries + 1


def test_a_delivery_for_an_expired_task_writes_nothing(
    fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers import webhooks

    delivery = Job.create("workers.webhooks.deliver", kwargs={"task_id": "gone", "url": "https://e.com/"},
                          connection=fake_redis, serializer=JSONSerializer)
    monkeypatch.setattr(webhooks, "get_current_job", lambda: delivery)
    assert webhooks.deliver("gone", "https://e.com/") == "task expired"
    assert not fake_redis.exists("rq:job:gone")  # not brought back as a hash without a lifetime
