"""Who a client is (address behind the router, named API keys), its token bucket, its request id."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import fakeredis
import pytest
from flask import Flask, request
from redis.exceptions import ResponseError
from rq.job import Job
from rq.serializers import JSONSerializer

from trustcard import logs
from trustcard.api.app import create_app
from trustcard.config import load_settings
from trustcard.exceptions import ConfigError

ADD = "/tasks/test/add?x=1&y=2"
TIGHT_LIMIT = {"RATE_LIMIT_PER_MINUTE": "1"}
"""Tests of who a client is need a bucket that does not refill while they run (at the default
50 a second, a slow machine refills one token between two requests): one token a minute."""
MOBILE_KEY = "mobile-key-0123456789"
BOT_KEY = "partner-bot-key-abcdef"


def make_app(tmp_path: Path, redis: fakeredis.FakeRedis, **env: str) -> Flask:
    settings = load_settings({"DATABASE_URL": f"sqlite:///{tmp_path / 'clients.db'}", **env})
    return create_app(settings, redis=redis)


def post_from(app: Flask, address: str, path: str = ADD, **headers: str):  # type: ignore[no-untyped-def]
    return app.test_client().post(path, headers=headers, environ_base={"REMOTE_ADDR": address})


# --- the token bucket at the defaults -------------------------------------------------------


def test_default_limit_accepts_a_burst_of_2000_from_one_client(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    client = make_app(tmp_path, fake_redis).test_client()
    answers = [client.post(ADD).status_code for _ in range(2000)]
    assert answers.count(202) == 2000
    last = client.post(ADD)
    assert last.headers["RateLimit-Limit"] == "2000"
    assert int(last.headers["RateLimit-Remaining"]) < 2000


def test_default_limit_refills_at_50_a_second(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    app = make_app(tmp_path, fake_redis)
    limiter = app.extensions["trustcard.ratelimiter"]
    assert limiter.take("addr:203.0.113.9", cost=2000).allowed
    refused = limiter.take("addr:203.0.113.9", cost=500)  # 10 s of refill: refused unless the test stalls 10 s
    assert not refused.allowed and refused.rate_per_second == 50
    assert refused.retry_after_seconds == 10
    assert refused.seconds_until_full == 40  # 2,000 tokens at 50 a second


def test_burst_and_per_minute_settings_then_429_with_retry_after_and_ratelimit_headers(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis
) -> None:
    client = make_app(tmp_path, fake_redis, RATE_LIMIT_BURST="3", **TIGHT_LIMIT).test_client()
    answers = [client.post(ADD) for _ in range(4)]
    assert [answer.status_code for answer in answers] == [202, 202, 202, 429]
    assert [answer.headers["RateLimit-Remaining"] for answer in answers[:3]] == ["2", "1", "0"]
    limited = answers[3]
    assert limited.get_json()["error"] == "rate_limited"
    assert "3 at once" in limited.get_json()["message"]
    assert limited.headers["Retry-After"] == "60"
    assert limited.headers["RateLimit-Limit"] == "3" and limited.headers["RateLimit-Remaining"] == "0"
    assert int(limited.headers["RateLimit-Reset"]) >= 1
    assert client.get("/health").status_code == 200  # reads are not limited


def test_an_invalid_submission_costs_no_token_under_burst_and_per_minute_settings(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis
) -> None:
    """A single task's token is taken with its enqueue, after its parameters are checked: a
    client fixing a bad request is told what is wrong (422, 404), not to slow down."""
    client = make_app(tmp_path, fake_redis, RATE_LIMIT_BURST="2", **TIGHT_LIMIT).test_client()
    for _ in range(3):
        assert client.post("/tasks/test/add?x=1").status_code == 422
        assert client.post("/tasks/no/such/type").status_code == 404
    assert [client.post(ADD).status_code for _ in range(3)] == [202, 202, 429]


def test_a_refused_keyed_submission_enqueues_nothing_and_gives_its_key_back_under_burst_and_per_minute_settings(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis
) -> None:
    client = make_app(tmp_path, fake_redis, RATE_LIMIT_BURST="1", **TIGHT_LIMIT).test_client()
    accepted = client.post(ADD, headers={"Idempotency-Key": "first"})
    assert accepted.status_code == 202
    refused = client.post(ADD, headers={"Idempotency-Key": "second"})
    assert refused.status_code == 429 and refused.headers["RateLimit-Remaining"] == "0"
    assert fake_redis.llen("rq:queue:analysis") == 1 and len(fake_redis.keys("trustcard:idempotency:*")) == 1
    replayed = client.post(ADD, headers={"Idempotency-Key": "first"})  # a replay takes no token
    assert replayed.status_code == 202 and replayed.headers["Idempotent-Replayed"] == "true"


def test_rate_limit_per_minute_setting_sets_the_refill_rate(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    app = make_app(tmp_path, fake_redis, RATE_LIMIT_PER_MINUTE="6")
    limiter = app.extensions["trustcard.ratelimiter"]
    assert limiter.take("addr:x", cost=2000).allowed
    assert limiter.take("addr:x").retry_after_seconds == 10  # one token every 10 s


def test_the_bucket_is_shared_in_redis_under_burst_and_per_minute_settings(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis
) -> None:
    first = make_app(tmp_path, fake_redis, RATE_LIMIT_BURST="2", **TIGHT_LIMIT)
    second = make_app(tmp_path, fake_redis, RATE_LIMIT_BURST="2", **TIGHT_LIMIT)  # another web process
    assert post_from(first, "198.51.100.1").status_code == 202
    assert post_from(second, "198.51.100.1").status_code == 202
    assert post_from(first, "198.51.100.1").status_code == 429
    [key] = fake_redis.keys("trustcard:ratelimit:*")
    assert key == b"trustcard:ratelimit:addr:198.51.100.1"
    assert 60 < fake_redis.ttl(key) <= 121  # gone once it would be full again: no key lives for ever


# --- who the client is -------------------------------------------------------------------------


def test_each_address_has_its_own_bucket_under_burst_and_per_minute_settings(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis
) -> None:
    app = make_app(tmp_path, fake_redis, RATE_LIMIT_BURST="1", **TIGHT_LIMIT)
    assert post_from(app, "198.51.100.1").status_code == 202
    assert post_from(app, "198.51.100.1").status_code == 429
    assert post_from(app, "198.51.100.2").status_code == 202


def test_an_unchecked_authorization_header_does_not_escape_burst_and_per_minute_settings(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis
) -> None:
    app = make_app(tmp_path, fake_redis, RATE_LIMIT_BURST="2", **TIGHT_LIMIT)
    answers = [post_from(app, "198.51.100.1", Authorization=f"Bearer made-up-{n}").status_code for n in range(4)]
    assert answers == [202, 202, 429, 429]


def test_x_forwarded_for_changes_nothing_at_the_default_zero_hops_under_burst_and_per_minute_settings(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis
) -> None:
    app = make_app(tmp_path, fake_redis, RATE_LIMIT_BURST="1", **TIGHT_LIMIT)
    assert post_from(app, "10.0.0.1", **{"X-Forwarded-For": "198.51.100.7"}).status_code == 202
    second = post_from(app, "10.0.0.1", **{"X-Forwarded-For": "198.51.100.8"})
    assert second.status_code == 429
    task = app.test_client().post(ADD, environ_base={"REMOTE_ADDR": "10.0.0.2"}).get_json()
    assert task["submitted_by"] == "10.0.0.2"


def test_trusted_proxy_hops_setting_reads_the_client_from_the_router(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis
) -> None:
    app = make_app(tmp_path, fake_redis, TRUSTED_PROXY_HOPS="1")
    app.add_url_rule("/seen-by-the-app", "seen", lambda: {"scheme": request.scheme, "address": request.remote_addr})
    # The client forged the first hop; the router appended the address it really saw.
    forwarded = {"X-Forwarded-For": "1.2.3.4, 198.51.100.7", "X-Forwarded-Proto": "https"}
    answer = post_from(app, "10.0.0.1", **forwarded)
    assert answer.status_code == 202
    assert answer.get_json()["submitted_by"] == "198.51.100.7"
    seen = app.test_client().get("/seen-by-the-app", headers=forwarded, environ_base={"REMOTE_ADDR": "10.0.0.1"})
    assert seen.get_json() == {"scheme": "https", "address": "198.51.100.7"}
    assert fake_redis.exists("trustcard:ratelimit:addr:198.51.100.7")


class TestNamedApiKeys:
    @pytest.fixture
    def app(self, tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> Flask:
        bot_hash = hashlib.sha256(BOT_KEY.encode()).hexdigest()
        return make_app(tmp_path, fake_redis, API_KEYS=f"mobile:{MOBILE_KEY},partner-bot:sha256:{bot_hash}")

    def test_each_key_is_its_client_in_the_task(self, app: Flask) -> None:
        mobile = post_from(app, "198.51.100.1", Authorization=f"Bearer {MOBILE_KEY}")
        bot = post_from(app, "198.51.100.1", Authorization=f"Bearer {BOT_KEY}")
        assert (mobile.status_code, bot.status_code) == (202, 202)
        assert mobile.get_json()["submitted_by"] == "mobile" and bot.get_json()["submitted_by"] == "partner-bot"
        read = app.test_client().get(mobile.headers["Location"], headers={"Authorization": f"Bearer {MOBILE_KEY}"})
        assert read.get_json()["submitted_by"] == "mobile"

    def test_a_missing_or_unknown_key_is_401(self, app: Flask) -> None:
        assert post_from(app, "198.51.100.1").status_code == 401
        wrong = post_from(app, "198.51.100.1", Authorization="Bearer not-a-key-of-anyone")
        assert wrong.status_code == 401 and wrong.get_json()["error"] == "unauthorized"
        hashed = hashlib.sha256(BOT_KEY.encode()).hexdigest()
        assert post_from(app, "198.51.100.1", Authorization=f"Bearer sha256:{hashed}").status_code == 401

    def test_api_keys_setting_gives_each_client_its_own_bucket_under_burst_and_per_minute_settings(
        self, tmp_path: Path, fake_redis: fakeredis.FakeRedis
    ) -> None:
        app = make_app(tmp_path, fake_redis, API_KEYS=f"mobile:{MOBILE_KEY},partner-bot:{BOT_KEY}",
                       RATE_LIMIT_BURST="1", **TIGHT_LIMIT)
        assert post_from(app, "198.51.100.1", Authorization=f"Bearer {MOBILE_KEY}").status_code == 202
        assert post_from(app, "198.51.100.2", Authorization=f"Bearer {MOBILE_KEY}").status_code == 429
        assert post_from(app, "198.51.100.1", Authorization=f"Bearer {BOT_KEY}").status_code == 202


def test_the_single_api_key_setting_still_works_and_the_address_stays_the_client(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis
) -> None:
    app = make_app(tmp_path, fake_redis, API_KEY="shared-secret")
    assert post_from(app, "198.51.100.1").status_code == 401
    answer = post_from(app, "198.51.100.1", Authorization="Bearer shared-secret")
    assert answer.status_code == 202 and answer.get_json()["submitted_by"] == "198.51.100.1"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("mobile", "must look like name:key"),
        ("bad name:0123456789abcdefgh", "client name"),
        ("mobile:short", "at least 16"),
        ("mobile:sha256:abc", "64 hex digits"),
        ("a:0123456789abcdefgh,a:zyxwvutsrqponmlkj", "more than once"),
        ("a:0123456789abcdefgh,b:0123456789abcdefgh", "same key"),
    ],
)
def test_a_malformed_api_keys_setting_is_one_sentence(value: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="API_KEYS") as raised:
        load_settings({"API_KEYS": value})
    assert problem in str(raised.value)


# --- request ids ---------------------------------------------------------------------------------


def test_a_valid_request_id_from_the_router_is_sent_back_and_kept_on_the_job(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis
) -> None:
    app = make_app(tmp_path, fake_redis)
    given = "f3b9c0de-1234-4bcd-9abc-0123456789ab"
    answer = app.test_client().post(ADD, headers={"X-Request-Id": given})
    assert answer.headers["X-Request-Id"] == given
    job = Job.fetch(answer.get_json()["task_id"], connection=fake_redis, serializer=JSONSerializer)
    assert job.meta["request_id"] == given


@pytest.mark.parametrize("given", ["short", "x" * 201, "has spaces in it, twenty+", "semi;colon;0123456789abc"])
def test_an_invalid_request_id_is_replaced_by_one_of_ours(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis, given: str
) -> None:
    answer = make_app(tmp_path, fake_redis).test_client().get("/health", headers={"X-Request-Id": given})
    made = answer.headers["X-Request-Id"]
    assert made != given and len(made) == 32


def test_every_answer_has_a_request_id_errors_included(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    client = make_app(tmp_path, fake_redis).test_client()
    for answer in (client.get("/nowhere"), client.post("/tasks/test/add?x=a"), client.get("/tasks/nope")):
        assert answer.status_code >= 400 and len(answer.headers["X-Request-Id"]) == 32


def test_the_web_log_line_of_a_submission_names_its_request_and_client(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(tmp_path, fake_redis)
    caplog.handler.addFilter(logs.ContextFilter())
    given = "abcdefghij0123456789ABCDEF"
    with caplog.at_level(logging.INFO, logger="trustcard"):
        task_id = post_from(app, "198.51.100.3", **{"X-Request-Id": given}).get_json()["task_id"]
    [record] = [r for r in caplog.records if "received" in r.getMessage()]
    assert (record.task_id, record.request_id, record.client) == (task_id, given, "198.51.100.3")
    assert record.log_context == f"[task_id={task_id} request_id={given} client=198.51.100.3] "


def test_log_format_json_setting_writes_one_object_per_line() -> None:
    formatter = logs.formatter_for(load_settings({"LOG_FORMAT": "json"}).log_format)
    record = logging.LogRecord("trustcard.task_service", logging.INFO, __file__, 1, "task %s received", ("t-1",), None)
    with logs.bound(task_id="t-1", request_id="r" * 20, client="mobile"):
        logs.ContextFilter().filter(record)
    line = formatter.format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "task t-1 received" and entry["level"] == "INFO" and entry["logger"] == "trustcard.task_service"
    assert (entry["task_id"], entry["request_id"], entry["client"]) == ("t-1", "r" * 20, "mobile")
    assert entry["time"].endswith("+00:00")


def test_log_lines_skip_the_caller_thread_and_process_lookups_and_still_carry_everything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Neither format prints where a line came from, nor its thread or process: configuring the
    logs turns those lookups off (the stack walk was a tenth of a worker's two lines per job)."""
    for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, name, getattr(logging, name))  # put back after the test
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    stream = io.StringIO()
    logs.configure_logging(load_settings({}), stream=stream)
    with logs.bound(task_id="t-1", request_id=None, client="mobile"):
        logging.getLogger("rq.worker").info("task %s succeeded", "t-1")
    assert (logging._srcfile, logging.logThreads, logging.logProcesses, logging.logMultiprocessing) == (
        None, False, False, False)
    assert stream.getvalue().endswith(" INFO rq.worker: [task_id=t-1 client=mobile] task t-1 succeeded\n")


def test_text_lines_read_as_the_standard_formatter_writes_them_across_seconds() -> None:
    """The text formatter formats the time once a second: each line still reads exactly as
    `logging.Formatter(TEXT_FORMAT)` writes it, the milliseconds and a new second included."""
    ours, standard = logs.formatter_for("text"), logging.Formatter(logs.TEXT_FORMAT)
    for created in (1796300000.004, 1796300000.999, 1796300001.0, 1796300001.5, 1796300000.25):
        record = logging.LogRecord("rq.worker", logging.INFO, __file__, 1, "task %s received", ("t-1",), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        with logs.bound(task_id="t-1", request_id=None, client=None):
            logs.ContextFilter().filter(record)
        assert ours.format(record) == standard.format(record)
        assert record.log_context == "[task_id=t-1] "


def test_the_default_log_format_is_readable_text() -> None:
    assert load_settings({}).log_format == "text"
    assert not isinstance(logs.formatter_for("text"), logs.JSONFormatter)


def test_a_bucket_script_refused_by_redis_lets_the_batch_answer_for_itself(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At `maxmemory` Redis refuses the rate limit's script with a plain ResponseError ("-OOM
    ..."): that take is not enforced, and the submission goes on (to its own 503 when Redis is full)."""
    app = make_app(tmp_path, fake_redis)
    limiter = app.extensions["trustcard.ratelimiter"]

    def refused(*_args: object, **_kwargs: object) -> None:
        raise ResponseError("Error running script: -OOM command not allowed when used memory > 'maxmemory'.")

    monkeypatch.setattr(limiter, "_take", refused)
    answer = app.test_client().post("/tasks/batch", json={"tasks": [{"type": "test.add", "params": {"x": 1, "y": 2}}]})
    assert answer.status_code == 202, answer.get_json()
    assert "RateLimit-Limit" not in answer.headers


def test_an_admission_refused_by_redis_is_a_503_that_says_so_and_enqueues_nothing(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A single task's take and enqueue are one script: Redis refusing its first write (out of
    memory, a read-only replica) refuses the whole of it, as the task service's 503."""
    app = make_app(tmp_path, fake_redis)
    admitter = app.extensions["trustcard.task_service"]._admitter
    for reply, kind in (("-OOM command not allowed when used memory > 'maxmemory'.", "OOM"),
                        ("-READONLY You can't write against a read only replica.", "READONLY")):
        def refused(*_args: object, reply: str = reply, **_kwargs: object) -> None:
            raise ResponseError(f"Error running script (call to f_0123): @user_script:12: {reply}")

        monkeypatch.setattr(admitter, "_admit", refused)
        answer = app.test_client().post(ADD)
        body = answer.get_json()
        assert (answer.status_code, body["error"]) == (503, "queue_unavailable"), (kind, body)
        assert "refusing new data" in body["message"], kind
    assert fake_redis.llen("rq:queue:analysis") == 0 and not fake_redis.keys("rq:job:*")
