"""Analyses on fakeredis and SQLite, their stages run in-process by RQ's SimpleWorker."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.job_lifecycle import record_job_failure
from rq.serializers import JSONSerializer
from sqlalchemy.exc import OperationalError

from tests import stage_probes
from tests.support.migrations import upgrade
from trustcard.analyses import records, stages
from trustcard.analyses.stage_jobs import new_job_id
from trustcard.analyses.urls import parse_post_url
from trustcard.api.app import create_app
from trustcard.catalogue import QUEUE_NAMES
from trustcard.config import load_settings
from workers import storage

POST = "https://www.instagram.com/p/Cx1_-z9/"


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def app(tmp_path: Path, redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    url = f"sqlite:///{tmp_path / 'analyses.db'}"
    upgrade(url)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("TRUSTCARD_PROBE_DIR", str(tmp_path))
    monkeypatch.setattr(storage, "_engine", None)
    app = create_app(load_settings({"DATABASE_URL": url, "SECRET_KEY": "unit"}), redis=redis)
    yield app
    app.extensions["trustcard.engine"].dispose()
    storage.engine().dispose()
    monkeypatch.setattr(storage, "_engine", None)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def probe() -> Iterator[stages.Stage]:
    stage = stage_probes.register_probe()
    yield stage
    stage_probes.unregister_probe()


def work(redis: fakeredis.FakeRedis, *queues: str) -> None:
    """Run every job waiting on `queues` (default: all), and the ones they hand on to."""
    names = queues or (*QUEUE_NAMES, "probes")
    worker = SimpleWorker([Queue(name, connection=redis, serializer=JSONSerializer) for name in names],
                          connection=redis, serializer=JSONSerializer)
    worker.work(burst=True)


def submit(client: FlaskClient, url: str = POST, **kwargs: Any) -> dict[str, Any]:
    response = client.post("/analyses", json={"url": url}, **kwargs)
    assert response.status_code == 202, response.get_json()
    assert response.headers["Location"] == f"/analyses/{response.get_json()['id']}"
    return dict(response.get_json())


def read(client: FlaskClient, analysis_id: str) -> dict[str, Any]:
    response = client.get(f"/analyses/{analysis_id}")
    assert response.status_code == 200
    return dict(response.get_json())


# --- URLs ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "is empty"),
        (42, "must be a string"),
        ("instagram.com/p/ABC/", "has no scheme"),
        ("ftp://www.instagram.com/p/ABC/", "scheme 'ftp'"),
        ("javascript:alert(1)", "scheme 'javascript'"),
        ("https://user:secret@instagram.com/p/ABC/", "carries credentials"),
        ("https://evil.com/p/ABC/", "is on 'evil.com', not Instagram"),
        ("https://instagram.com.evil.com/p/ABC/", "not Instagram"),
        ("https://www.instagram.com:8443/p/ABC/", "names the port 8443"),
        ("https://www.instagram.com/someone/", "is not a post"),
        ("https://www.instagram.com/stories/someone/123/", "is not a post"),
        ("https://www.instagram.com/p/", "has no shortcode"),
        ("https://www.instagram.com/p/ABC/extra/", "has more path after the shortcode"),
        ("https://www.instagram.com/p/AB$C/", "has a shortcode that is not"),
        ("https://www.instagram.com/p/" + "A" * 65 + "/", "has a shortcode that is not"),
        ("https://www.instagram.com/p/A B/", "contains spaces"),
        ("https://www.instagram.com/p/" + "A" * 3000, "longer than 2048"),
        ("https://[::1/p/ABC/", "cannot be read as a URL"),
    ],
)
def test_an_invalid_url_is_a_422_that_says_what_is_wrong(client: FlaskClient, url: object, problem: str) -> None:
    response = client.post("/analyses", json={"url": url})
    assert response.status_code == 422, response.get_json()
    body = response.get_json()
    assert body["error"] == "validation_error"
    assert [item["parameter"] for item in body["problems"]] == ["url"]
    assert problem in body["problems"][0]["problem"] and problem in body["message"]


def test_a_body_without_url_or_not_an_object_is_refused(client: FlaskClient) -> None:
    assert client.post("/analyses", json={}).get_json()["problems"] == [{"parameter": "url", "problem": "is required"}]
    assert client.post("/analyses", json=["x"]).status_code == 400
    assert client.post("/analyses", json={"url": POST, "extra": 1}).status_code == 400


@pytest.mark.parametrize(
    "url",
    [
        "https://www.instagram.com/p/Cx1_-z9/",
        "http://instagram.com/p/Cx1_-z9",
        "https://m.instagram.com/reel/Cx1_-z9/?igsh=abc#top",
        "HTTPS://WWW.Instagram.COM/tv/Cx1_-z9/",
        "  https://instagram.com/P/Cx1_-z9/  ",
    ],
)
def test_every_accepted_spelling_has_one_canonical_form(url: str) -> None:
    parsed = parse_post_url(url)
    assert (parsed.url, parsed.shortcode) == (POST, "Cx1_-z9")


# --- stage declarations --------------------------------------------------------------

def test_default_stages_in_order_on_the_queues_that_suit_them() -> None:
    assert [(s.name, s.queue) for s in stages.stages()] == [
        ("content", "ingest"), ("ai_detection", "models"), ("deepfake_detection", "models"),
        ("fact_check", "models"), ("trust", "analysis"),
    ]
    for stage in stages.stages():
        assert 0 < stage.soft_timeout <= stage.hard_timeout
    assert set(stages.queue_names()) <= set(QUEUE_NAMES)


def test_register_refuses_a_second_stage_of_the_same_name_and_bad_limits() -> None:
    with pytest.raises(ValueError, match="already registered"):
        stages.register(stages.DEFAULT_STAGES[0])
    with pytest.raises(ValueError, match="limits"):
        stages.register(stages.Stage("x", "m.f", "q", "x", soft_timeout=10, hard_timeout=5))
    assert stages.stages() == stages.DEFAULT_STAGES


def test_a_registered_extra_stage_on_an_extra_queue_runs_before_the_score(
    client: FlaskClient, redis: fakeredis.FakeRedis, probe: stages.Stage
) -> None:
    analysis = submit(client)
    assert [s["name"] for s in analysis["stages"]][-2:] == ["probe", "trust"]
    work(redis, *QUEUE_NAMES)  # no worker serves "probes": the analysis waits there
    waiting = read(client, analysis["id"])
    assert waiting["status"] == "running" and waiting["progress"]["stage"] == "probe"
    assert Queue("probes", connection=redis, serializer=JSONSerializer).count == 1
    work(redis, "probes", *QUEUE_NAMES)
    done = read(client, analysis["id"])
    assert done["status"] == "completed"
    probe_stage = next(s for s in done["stages"] if s["name"] == "probe")
    assert probe_stage["queue"] == "probes"
    assert probe_stage["output"] == {"probed": "Cx1_-z9",
                                     "saw": ["ai_detection", "content", "deepfake_detection", "fact_check"]}


# --- the record ----------------------------------------------------------------------

def test_happy_path_every_stage_writes_its_part_and_no_score_is_invented(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    analysis = submit(client, "https://m.instagram.com/reel/Cx1_-z9/?utm=1")
    assert (analysis["url"], analysis["shortcode"], analysis["status"]) == (POST, "Cx1_-z9", "pending")
    assert [s["status"] for s in analysis["stages"]] == ["pending"] * 5
    work(redis)
    done = read(client, analysis["id"])
    assert done["status"] == "completed" and done["ended_at"] and done["error"] is None
    assert done["trust_score"] is None and done["result"]["trust_score"] is None
    assert done["progress"] == {"percent": 100, "completed": 5, "total": 5, "stage": None}
    for stage in done["stages"]:
        assert stage["status"] == "completed" and stage["runs"] == 1 and stage["output"]["placeholder"] is True
        assert stage["started_at"] <= stage["ended_at"] and stage["worker"]
    assert set(done["result"]["stages"]) == {s.name for s in stages.stages()}


def test_a_duplicate_while_running_answers_that_analysis_and_a_new_one_after_it_ended(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    first = submit(client)
    again = client.post("/analyses", json={"url": "http://instagram.com/tv/Cx1_-z9"})
    assert again.status_code == 200 and again.get_json()["id"] == first["id"]
    assert again.headers["Location"] == f"/analyses/{first['id']}"
    assert Queue("ingest", connection=redis, serializer=JSONSerializer).count == 1
    work(redis)
    second = submit(client)
    assert second["id"] != first["id"]


def test_idempotency_key_replays_the_first_analysis_and_refuses_another_url(client: FlaskClient) -> None:
    first = submit(client, headers={"Idempotency-Key": "k-1"})
    replay = client.post("/analyses", json={"url": POST}, headers={"Idempotency-Key": "k-1"})
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json()["id"] == first["id"]
    other = client.post("/analyses", json={"url": "https://instagram.com/p/OTHER/"}, headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 409 and other.get_json()["error"] == "idempotency_key_reused"


def test_a_failing_stage_fails_the_analysis_keeping_earlier_outputs_and_retry_resumes_there(
    client: FlaskClient, redis: fakeredis.FakeRedis, probe: stages.Stage, tmp_path: Path
) -> None:
    (tmp_path / "fail-Cx1_-z9").touch()
    analysis = submit(client)
    work(redis)
    failed = read(client, analysis["id"])
    assert failed["status"] == "failed" and failed["failed_stage"] == "probe"
    assert failed["error"] == "Stage probe failed: RuntimeError: probe refused Cx1_-z9"
    by_name = {s["name"]: s for s in failed["stages"]}
    assert by_name["probe"]["status"] == "failed" and by_name["trust"]["status"] == "pending"
    assert all(by_name[name]["status"] == "completed" and by_name[name]["output"] for name in
               ("content", "ai_detection", "deepfake_detection", "fact_check"))
    assert client.post(f"/analyses/{analysis['id']}/retry").status_code == 202
    assert client.post(f"/analyses/{analysis['id']}/retry").get_json()["error"] == "analysis_not_retryable"
    (tmp_path / "fail-Cx1_-z9").unlink()
    work(redis)
    done = read(client, analysis["id"])
    assert done["status"] == "completed" and done["failed_stage"] is None and done["error"] is None
    assert [s["runs"] for s in done["stages"]] == [1, 1, 1, 1, 2, 1]
    assert stage_probes.runs("Cx1_-z9") == 2


def test_cancel_stops_what_is_left_and_keeps_what_was_done(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    analysis = submit(client)
    work(redis, "ingest")  # content done; ai_detection waits on models
    cancelled = client.delete(f"/analyses/{analysis['id']}")
    assert cancelled.status_code == 200
    body = cancelled.get_json()
    assert body["status"] == "cancelled" and body["error"] == "Cancelled on request."
    assert [s["status"] for s in body["stages"]] == ["completed"] + ["cancelled"] * 4
    work(redis)
    after = read(client, analysis["id"])
    assert [s["runs"] for s in after["stages"]] == [1, 0, 0, 0, 0]  # the cancelled job never ran
    again = client.delete(f"/analyses/{analysis['id']}")
    assert again.status_code == 409 and again.get_json() == {
        "error": "analysis_already_ended", "status": "cancelled",
        "message": f"Analysis {analysis['id']} has already ended as cancelled; there is nothing to cancel."}
    assert client.post(f"/analyses/{analysis['id']}/retry").get_json()["stages"][1]["status"] == "pending"
    work(redis)
    assert [s["runs"] for s in read(client, analysis["id"])["stages"]] == [1, 1, 1, 1, 1]


def test_unknown_analysis_is_404(client: FlaskClient) -> None:
    for response in (client.get("/analyses/nope"), client.delete("/analyses/nope"),
                     client.post("/analyses/nope/retry")):
        assert response.status_code == 404 and response.get_json()["error"] == "analysis_not_found"


def test_history_of_a_post_and_by_status_newest_first_with_cursors(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    ids = []
    for _ in range(5):
        ids.append(submit(client)["id"])
        work(redis)
    other = submit(client, "https://instagram.com/p/OTHER/")["id"]
    seen: list[str] = []
    cursor = None
    while True:
        query = {"url": "https://m.instagram.com/reel/Cx1_-z9", "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = client.get("/analyses", query_string=query).get_json()
        seen += [a["id"] for a in page["analyses"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    pending = client.get("/analyses?status=pending").get_json()
    assert [a["id"] for a in pending["analyses"]] == [other] and pending["next_cursor"] is None
    for query, parameter in (("status=done", "status"), ("limit=0", "limit"), ("cursor=zzz", "cursor"),
                             ("url=https://evil.com/p/A/", "url")):
        refused = client.get(f"/analyses?{query}")
        assert refused.status_code == 422 and refused.get_json()["problems"][0]["parameter"] == parameter, query


def test_a_database_hiccup_while_storing_is_retried_until_stored(
    client: FlaskClient, redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    analysis = submit(client)
    real_change = records.change
    failures = {"left": 3}

    def flaky(*args: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("UPDATE analyses", {}, Exception("server closed the connection"))
        return real_change(*args)

    monkeypatch.setattr(records, "WRITE_RETRY_SECONDS", (0.01,))
    monkeypatch.setattr(records, "change", flaky)
    work(redis)
    assert failures["left"] == 0
    assert read(client, analysis["id"])["status"] == "completed"


def test_a_change_that_changes_nothing_leaves_updated_at_as_the_client_read_it(client: FlaskClient, app: Flask) -> None:
    """The callback claim of an analysis without a Callback-URL runs after its end; a final view
    read before it must stay the final view (found by a CI run: updated_at moved 3 ms later)."""
    analysis = submit(client)
    engine = app.extensions["trustcard.engine"]
    before = read(client, analysis["id"])
    assert records.change(engine, analysis["id"], lambda row, entries: None) is None
    assert read(client, analysis["id"]) == before

    def touch_stage(row: Any, entries: records.StageEntries) -> None:
        entries[0]["runs"] = 5

    records.change(engine, analysis["id"], touch_stage)
    assert read(client, analysis["id"])["updated_at"] > before["updated_at"]


def test_a_database_that_does_not_answer_is_a_503(client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: Any) -> Any:
        raise OperationalError("SELECT", {}, Exception("could not connect"))

    monkeypatch.setattr(records, "read", down)
    response = client.get("/analyses/some-id")
    assert response.status_code == 503 and response.get_json()["error"] == "database_unavailable"
    assert response.headers["Retry-After"] == "5"


def test_wait_answers_at_the_end_or_after_n_seconds(client: FlaskClient, redis: fakeredis.FakeRedis) -> None:
    analysis = submit(client)
    started = time.monotonic()
    waited = client.get(f"/analyses/{analysis['id']}?wait=0.5").get_json()
    assert waited["status"] == "pending" and time.monotonic() - started >= 0.5
    work(redis)
    started = time.monotonic()
    assert client.get(f"/analyses/{analysis['id']}?wait=20").get_json()["status"] == "completed"
    assert time.monotonic() - started < 1
    refused = client.get(f"/analyses/{analysis['id']}?wait=30")
    assert refused.status_code == 422 and refused.get_json()["problems"][0]["parameter"] == "wait"


def test_a_stage_whose_job_failed_without_recording_fails_the_analysis_when_read(
    client: FlaskClient, app: Flask, redis: fakeredis.FakeRedis
) -> None:
    """As when its worker killed it at the hard limit: the stage never wrote its end."""
    analysis = submit(client)
    engine = app.extensions["trustcard.engine"]

    def start(row: Any, entries: records.StageEntries) -> str:
        row.status = "running"
        entries[0]["status"] = "running"
        return str(entries[0]["job_id"])

    job_id = records.change(engine, analysis["id"], start)
    job = Job.fetch(str(job_id), connection=redis, serializer=JSONSerializer)
    with redis.pipeline() as pipeline:
        record_job_failure(job, "JobTimeoutException: killed at its hard limit of 90 s", pipeline)
        pipeline.execute()
    failed = read(client, analysis["id"])
    assert (failed["status"], failed["failed_stage"]) == ("failed", "content"), failed
    assert "killed at its hard limit of 90 s" in failed["error"]
    assert failed["stages"][0]["status"] == "failed"


def _blocks(body: bytes) -> list[dict[str, Any]]:
    """The events of a stream's body: name, id and data of each."""
    found = []
    for block in body.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if "event" in lines:
            found.append({"event": lines["event"], "id": int(lines["id"]), "data": json.loads(lines["data"])})
    return found


def test_events_replay_every_transition_after_each_possible_last_event_id(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    analysis = submit(client)
    work(redis)
    fresh = _blocks(client.get(f"/analyses/{analysis['id']}/events").data)
    assert [(b["event"], b["id"]) for b in fresh] == [("state", 20), ("end", 21)]
    assert fresh[-1]["data"]["status"] == "completed"
    everything = _blocks(client.get(f"/analyses/{analysis['id']}/events", headers={"Last-Event-ID": "0"}).data)
    updates = [b for b in everything if b["event"] == "update"]
    assert [b["id"] for b in updates] == list(range(2, 21, 2))
    assert [(b["data"]["transition"]["stage"], b["data"]["transition"]["status"]) for b in updates] == [
        (name, status) for name in ("content", "ai_detection", "deepfake_detection", "fact_check", "trust")
        for status in ("running", "completed")]
    for after in range(0, 21):
        replay = _blocks(client.get(f"/analyses/{analysis['id']}/events",
                                    headers={"Last-Event-ID": str(after)}).data)
        assert [b["id"] for b in replay] == [b["id"] for b in everything if b["id"] > after], after
    assert client.get(f"/analyses/{analysis['id']}/events", headers={"Last-Event-ID": "21"}).status_code == 204
    bad = client.get(f"/analyses/{analysis['id']}/events", headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 422 and bad.get_json()["problems"][0]["parameter"] == "Last-Event-ID"
    assert client.get("/analyses/nope/events").status_code == 404


def test_a_live_stream_sends_one_update_per_transition_even_when_written_between_two_reads(
    client: FlaskClient, app: Flask, redis: fakeredis.FakeRedis
) -> None:
    from trustcard.api.analysis_stream import AnalysisStream

    analysis = submit(client)
    with app.app_context():
        stream = AnalysisStream(app.extensions["trustcard.analysis_service"], app.extensions["trustcard.events"],
                                analysis["id"], None, heartbeat_seconds=15)
        events = stream.events()
        first = next(events)
        assert first.startswith(b"event: state\nid: 0\n")
        work(redis)  # ten transitions and the end, all before the stream reads again
        rest = _blocks(b"".join(events))
    assert [b["event"] for b in rest] == ["update"] * 10 + ["end"]
    assert [b["id"] for b in rest] == [*range(2, 21, 2), 21]


def test_the_stream_wakes_on_the_announcement_not_on_a_poll(
    client: FlaskClient, app: Flask, redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trustcard.api import analysis_stream
    from trustcard.analyses.events import announce

    monkeypatch.setattr(analysis_stream, "SAFETY_READ_SECONDS", 60.0)
    analysis = submit(client)
    with app.app_context():
        stream = analysis_stream.AnalysisStream(app.extensions["trustcard.analysis_service"], app.extensions["trustcard.events"],
                                                analysis["id"], None, heartbeat_seconds=15)
        events = stream.events()
        next(events)
        work(redis, "ingest")  # announces each write of the content stage
        started = time.monotonic()
        woken = next(events)
        assert time.monotonic() - started < 5 and b"event: update\nid: 2\n" in woken
        assert b"id: 4" in next(events)
        stream.close()
    waiter = app.extensions["trustcard.events"].register("analysis-" + analysis["id"])
    announce(redis, analysis["id"])
    assert waiter.wait(5) == ["written"]
    app.extensions["trustcard.events"].unregister(waiter)


def test_wait_wakes_on_the_announcement_of_the_end(
    client: FlaskClient, app: Flask, redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from trustcard.analyses.events import announce
    from trustcard.api import analysis_stream

    monkeypatch.setattr(analysis_stream, "SAFETY_READ_SECONDS", 60.0)
    analysis = submit(client)
    engine = app.extensions["trustcard.engine"]

    def end_it() -> None:  # as the last stage's write does, then its announcement
        def apply(row: Any, entries: records.StageEntries) -> None:
            row.status, row.ended_at = "completed", records.utcnow()

        records.change(engine, analysis["id"], apply)
        announce(redis, analysis["id"])

    timer = threading.Timer(0.3, end_it)
    timer.start()
    started = time.monotonic()
    assert client.get(f"/analyses/{analysis['id']}?wait=20").get_json()["status"] == "completed"
    assert time.monotonic() - started < 5
    timer.join()


def test_a_stage_that_stored_its_output_but_died_before_handing_on_is_handed_on_when_read(
    client: FlaskClient, app: Flask, redis: fakeredis.FakeRedis
) -> None:
    """The crash window of the hand-off: the output and the next job's id are stored, then
    the worker dies before it enqueues that job, and the stage has no retry left."""
    analysis = submit(client)
    engine = app.extensions["trustcard.engine"]

    def stored_without_hand_off(row: Any, entries: records.StageEntries) -> tuple[str, str]:
        row.status = "running"
        entries[0].update(status="completed", output={"caption": "stored"})
        entries[1]["job_id"] = new_job_id()
        return str(entries[0]["job_id"]), str(entries[1]["job_id"])

    first_job_id, next_job_id = records.change(engine, analysis["id"], stored_without_hand_off)
    assert read(client, analysis["id"])["status"] == "running"
    assert not redis.exists(Job.key_for(next_job_id)), "handed on while the first stage's job had not ended"

    first_job = Job.fetch(first_job_id, connection=redis, serializer=JSONSerializer)
    with redis.pipeline() as pipeline:
        record_job_failure(first_job, "JobProcessCrashed: the job process died", pipeline)
        pipeline.execute()
    assert read(client, analysis["id"])["status"] == "running"
    assert redis.exists(Job.key_for(next_job_id)), "the next stage was not queued when read"
    work(redis)
    ended = read(client, analysis["id"])
    assert ended["status"] == "completed", ended
    assert ended["stages"][0]["output"] == {"caption": "stored"}
    assert [stage["status"] for stage in ended["stages"]] == ["completed"] * len(ended["stages"])


def test_a_quiet_stream_sends_a_heartbeat_with_events_heartbeat_seconds_short(
    client: FlaskClient, app: Flask
) -> None:
    from trustcard.api.analysis_stream import AnalysisStream

    analysis = submit(client)  # nothing runs it: the stream stays quiet
    with app.app_context():
        stream = AnalysisStream(app.extensions["trustcard.analysis_service"], app.extensions["trustcard.events"],
                                analysis["id"], None, heartbeat_seconds=0.2)
        events = stream.events()
        assert next(events).startswith(b"event: state")
        started = time.monotonic()
        assert next(events) == b": keep-alive\n\n"
        assert 0.15 <= time.monotonic() - started < 5
        stream.close()


class _NoHub:
    """An event hub whose listener cannot reach Redis."""

    def register(self, key: str) -> Any:
        from trustcard.exceptions import QueueUnavailable

        raise QueueUnavailable("no Redis")

    def unregister(self, waiter: Any) -> None:
        raise AssertionError("nothing was registered")


def test_without_the_event_hub_the_stream_reads_the_row_and_still_ends(
    client: FlaskClient, app: Flask, redis: fakeredis.FakeRedis
) -> None:
    from trustcard.api.analysis_stream import AnalysisStream

    analysis = submit(client)
    with app.app_context():
        stream = AnalysisStream(app.extensions["trustcard.analysis_service"], _NoHub(),  # type: ignore[arg-type]
                                analysis["id"], None, heartbeat_seconds=15)
        events = stream.events()
        next(events)
        work(redis)
        rest = _blocks(b"".join(events))
    assert [b["event"] for b in rest] == ["update"] * 10 + ["end"]


def test_a_cancel_mid_pipeline_ends_the_stream_after_the_transitions_so_far(
    client: FlaskClient, redis: fakeredis.FakeRedis
) -> None:
    analysis = submit(client)
    work(redis, "ingest")  # content done; ai_detection waits on models
    assert client.delete(f"/analyses/{analysis['id']}").status_code == 200
    replay = _blocks(client.get(f"/analyses/{analysis['id']}/events", headers={"Last-Event-ID": "0"}).data)
    assert [(b["event"], b["id"]) for b in replay] == [("update", 2), ("update", 4), ("end", 5)]
    assert replay[-1]["data"]["status"] == "cancelled"
    assert client.post(f"/analyses/{analysis['id']}/retry").status_code == 202
    work(redis)
    resumed = _blocks(client.get(f"/analyses/{analysis['id']}/events", headers={"Last-Event-ID": "5"}).data)
    assert [b["id"] for b in resumed] == [*range(6, 21, 2), 21]  # after the old end, nothing missed
    assert resumed[0]["data"]["transition"] == {"stage": "ai_detection", "index": 1, "run": 1, "status": "running"}
