"""Task events on fakeredis: what workers publish, the web's listener, `?wait` and the stream.

The same paths through gunicorn with a real worker are in
tests/integration/test_task_events.py; these pin the pieces: channel names, the bounded
progress history, the end's PUBLISH riding on every end, a waiter woken by the listener,
the stream's ids and replay, and a broken listener ending in 503, not a hang.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis.exceptions import ConnectionError as RedisConnectionError
from rq import Queue
from rq.job import Job
from rq.results import Result
from rq.serializers import JSONSerializer

from trustcard import task_events
from trustcard.api.event_hub import EventHub
from trustcard.api.app import create_app
from trustcard.config import load_settings
from trustcard.exceptions import QueueUnavailable
from trustcard.metrics.outcomes import TaskOutcome
from trustcard.task_ends import job_end_commands


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def app(fake_redis: fakeredis.FakeRedis, tmp_path: Any) -> Iterator[Flask]:
    settings = load_settings({"DATABASE_URL": f"sqlite:///{tmp_path / 'events.db'}"})
    app = create_app(settings, redis=fake_redis)
    yield app
    app.extensions["trustcard.events"].stop()
    app.extensions["trustcard.engine"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def submit(client: FlaskClient, path: str = "/tasks/test/add?x=1&y=2") -> str:
    response = client.post(path)
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["task_id"])


def job_of(fake_redis: fakeredis.FakeRedis, task_id: str) -> Job:
    return Job.fetch(task_id, connection=fake_redis, serializer=JSONSerializer)


def write_progress(fake_redis: fakeredis.FakeRedis, task_id: str, percent: int, stage: str) -> int:
    """What workers.progress.report_progress writes, from outside a worker."""
    job = job_of(fake_redis, task_id)
    seq = task_events.append_progress(job.meta, {"percent": percent, "stage": stage})
    job.save_meta()
    fake_redis.eval(*task_events.progress_arguments(task_id, seq))
    return seq


def finish(fake_redis: fakeredis.FakeRedis, task_id: str, result: Any = 3) -> None:
    """End the task as a worker's success path does: its status and result recorded, then
    the end's commands (here only their PUBLISH matters)."""
    job = job_of(fake_redis, task_id)
    with fake_redis.pipeline() as pipeline:
        job.set_status("finished", pipeline=pipeline)
        Result.create(job, Result.Type.SUCCESSFUL, ttl=60, return_value=result, pipeline=pipeline)
        pipeline.execute()
    for command in job_end_commands(job, TaskOutcome.COMPLETED, timed=False):
        if command[0] == task_events.PUBLISH_IF_WATCHED:
            fake_redis.eval(task_events.PUBLISH_IF_WATCHED_SCRIPT, 1, *command[1:])


# --- what workers publish ----------------------------------------------------------------


def test_channel_names_round_trip() -> None:
    assert task_events.channel("abc") == "trustcard:task:abc"
    assert task_events.task_id_of(b"trustcard:task:abc") == "abc"
    assert task_events.task_id_of("other:abc") is None


def test_every_end_carries_the_publish_of_its_task_while_watched(fake_redis: fakeredis.FakeRedis) -> None:
    job = Queue("analysis", connection=fake_redis, serializer=JSONSerializer).enqueue(
        "workers.diagnostics.add", 1, 2, meta={"job_type": "test.add"}
    )
    announce = (task_events.PUBLISH_IF_WATCHED, f"trustcard:watch:{job.id}", f"trustcard:task:{job.id}", "end")
    for outcome in TaskOutcome:
        assert announce in job_end_commands(job, outcome, timed=False), outcome


def _listening(fake_redis: fakeredis.FakeRedis, task_id: str) -> Any:
    pubsub = fake_redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(task_events.channel(task_id))
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    return pubsub


def _published(pubsub: Any) -> list[bytes]:
    messages = []
    while (message := pubsub.get_message(timeout=0.05)) is not None:
        messages.append(message["data"])
    return messages


def test_an_end_is_published_only_while_its_task_is_watched_by_the_counts_script(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    """RQ's own end paths run the end's commands through the counts' script (trustcard.task_ends)."""
    from trustcard.task_ends import count_end

    job = Queue("analysis", connection=fake_redis, serializer=JSONSerializer).enqueue(
        "workers.diagnostics.add", 1, 2, meta={"job_type": "test.add"}
    )
    pubsub = _listening(fake_redis, job.id)
    assert count_end(fake_redis, job, TaskOutcome.FAILED, timed=False)
    assert _published(pubsub) == []  # nobody watches: no wake-up for any web process
    fake_redis.execute_command(*task_events.watch_command(job.id, 5))
    assert count_end(fake_redis, job, TaskOutcome.FAILED, timed=False)
    assert _published(pubsub) == [b"end"]
    assert 0 < fake_redis.pttl(task_events.watch_key(job.id)) <= 5000


def test_an_end_is_published_only_while_its_task_is_watched_by_the_workers_bookkeeping(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    from workers.job import CatalogueJob
    from workers.supervisor.bookkeeping import Bookkeeper, CommandBatch

    book = Bookkeeper(fake_redis, [], CatalogueJob, JSONSerializer)
    pubsub = _listening(fake_redis, "t1")
    for watched in (False, True):
        if watched:
            fake_redis.execute_command(*task_events.watch_command("t1", 5))
        batch = CommandBatch()
        batch.best_effort.append(task_events.end_command("t1"))
        assert book.run(batch, None) is None
        assert _published(pubsub) == ([b"end"] if watched else [])


def test_progress_history_is_bounded_and_keeps_counting() -> None:
    meta: dict[str, Any] = {}
    for number in range(task_events.PROGRESS_LOG_LIMIT + 20):
        seq = task_events.append_progress(meta, {"percent": number, "stage": f"s{number}"})
    assert seq == task_events.PROGRESS_LOG_LIMIT + 20
    history = task_events.progress_log(meta)
    assert len(history) == task_events.PROGRESS_LOG_LIMIT
    assert history[0]["seq"] == 21 and history[-1]["seq"] == seq
    assert meta["progress"] == {"percent": seq - 1, "stage": f"s{seq - 1}"}  # the view's field, as before


def test_report_progress_writes_the_meta_and_publishes_while_watched(
    fake_redis: fakeredis.FakeRedis, monkeypatch: Any
) -> None:
    from workers import progress

    job = Queue("analysis", connection=fake_redis, serializer=JSONSerializer).enqueue("workers.diagnostics.long_task")
    monkeypatch.setattr(progress, "get_current_job", lambda: job)
    pubsub = _listening(fake_redis, job.id)
    progress.report_progress(10, "Fetching the post...")
    assert _published(pubsub) == []  # nobody watches it yet
    fake_redis.execute_command(*task_events.watch_command(job.id, 5))
    progress.report_progress(20, "Running AI detection...")
    progress.report_progress(40, "Checking for deepfakes...")
    stored = job_of(fake_redis, job.id)
    assert stored.meta["progress"] == {"percent": 40, "stage": "Checking for deepfakes..."}
    assert [entry["seq"] for entry in stored.meta["progress_log"]] == [1, 2, 3]
    assert _published(pubsub) == [b"2", b"3"]


# --- the listener ------------------------------------------------------------------------


def test_a_waiter_registered_before_the_publish_is_woken(fake_redis: fakeredis.FakeRedis) -> None:
    hub = EventHub(lambda: fake_redis)
    try:
        with hub.waiting("t1") as waiter, hub.waiting("t2") as other:
            fake_redis.publish(task_events.channel("t1"), "end")
            assert waiter.wait(2) == ["end"]
            assert other.wait(0.05) == []
        assert hub.waiter_count == 0
    finally:
        hub.stop()


def test_a_listener_that_cannot_reach_redis_answers_503_not_a_hang() -> None:
    def unreachable() -> Any:
        raise RedisConnectionError("Connection refused")

    hub = EventHub(unreachable)
    started = time.monotonic()
    try:
        with pytest.raises(QueueUnavailable):
            hub.register("t1")
    finally:
        hub.stop()
    assert time.monotonic() - started < 5


class DroppingPubSub:
    """A PubSub whose connection drops when told to, as a Redis restart drops it."""

    def __init__(self, drop: threading.Event) -> None:
        self.drop = drop
        self.confirmed = False

    def psubscribe(self, *_: Any) -> None:
        pass

    def get_message(self, timeout: float = 0.0) -> dict[str, Any] | None:
        if not self.confirmed:
            self.confirmed = True
            return {"type": "psubscribe", "channel": b"trustcard:task:*", "data": 1}
        if self.drop.wait(timeout):
            raise RedisConnectionError("Connection closed by server.")
        return None

    def close(self) -> None:
        pass


def test_a_waiter_is_broken_off_when_the_listener_loses_redis() -> None:
    drop = threading.Event()

    class Client:
        def pubsub(self) -> DroppingPubSub:
            return DroppingPubSub(drop)

    hub = EventHub(lambda: Client())  # type: ignore[arg-type, return-value]
    try:
        waiter = hub.register("t1")
        drop.set()
        started = time.monotonic()
        with pytest.raises(QueueUnavailable):
            waiter.wait(10)
        assert time.monotonic() - started < 2
        hub.unregister(waiter)
    finally:
        hub.stop()


# --- ?wait -------------------------------------------------------------------------------


def test_wait_answers_when_the_task_ends(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    task_id = submit(client)
    timer = threading.Timer(0.3, finish, (fake_redis, task_id))
    timer.start()
    started = time.monotonic()
    response = client.get(f"/tasks/{task_id}?wait=10")
    elapsed = time.monotonic() - started
    timer.join()
    assert response.status_code == 200 and response.get_json()["status"] == "completed"
    assert response.get_json()["result"] == 3
    assert 0.25 < elapsed < 2, elapsed


def test_wait_answers_at_its_deadline(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    task_id = submit(client)
    assert not fake_redis.exists(task_events.watch_key(task_id))  # a plain submission: nobody watches
    started = time.monotonic()
    response = client.get(f"/tasks/{task_id}?wait=0.5")
    assert 0.5 <= time.monotonic() - started < 1.5
    assert response.get_json()["status"] == "pending"
    # Watched from its watched read (after its waiter registered) for the wait and a margin
    # (trustcard.task_events).
    assert 0 < fake_redis.pttl(task_events.watch_key(task_id)) <= 5500


def test_wait_on_an_unknown_task_is_the_json_404(client: FlaskClient) -> None:
    response = client.get("/tasks/nope?wait=1")
    assert response.status_code == 404 and response.get_json()["error"] == "task_not_found"


# --- the event stream --------------------------------------------------------------------


def parse(raw: bytes) -> list[dict[str, Any]]:
    blocks = []
    for chunk in raw.decode().split("\n\n"):
        if not chunk.strip():
            continue
        block: dict[str, Any] = {}
        for line in chunk.splitlines():
            if line.startswith(":"):
                block["comment"] = line[1:].strip()
            else:
                name, _, value = line.partition(": ")
                block[name] = json.loads(value) if name == "data" else value
        blocks.append(block)
    return blocks


def test_stream_of_an_ended_task_is_its_state_then_its_end(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    task_id = submit(client)
    write_progress(fake_redis, task_id, 50, "half")
    finish(fake_redis, task_id)
    response = client.get(f"/tasks/{task_id}/events")
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache" and response.headers["X-Accel-Buffering"] == "no"
    state, end = parse(response.data)
    assert (state["event"], state["id"]) == ("state", "1")
    assert (end["event"], end["id"]) == ("end", "2")
    assert end["data"] == client.get(f"/tasks/{task_id}").get_json()
    # Its reads watch the task for a quiet stream's longest gap between two reads, and a margin.
    assert 60_000 < fake_redis.pttl(task_events.watch_key(task_id)) <= 80_500


def test_stream_replays_what_came_after_last_event_id(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    task_id = submit(client)
    for percent in (20, 40, 60):
        write_progress(fake_redis, task_id, percent, f"at {percent}")
    finish(fake_redis, task_id)
    blocks = parse(client.get(f"/tasks/{task_id}/events", headers={"Last-Event-ID": "1"}).data)
    assert [(block["event"], block["id"]) for block in blocks] == [("progress", "2"), ("progress", "3"), ("end", "4")]
    assert blocks[0]["data"] == {"percent": 40, "stage": "at 40"}
    assert client.get(f"/tasks/{task_id}/events", headers={"Last-Event-ID": "4"}).status_code == 204


def test_stream_pushes_progress_as_it_is_written(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    task_id = submit(client)

    def worker() -> None:
        for percent in (20, 40):
            time.sleep(0.2)
            write_progress(fake_redis, task_id, percent, f"at {percent}")
        time.sleep(0.2)
        finish(fake_redis, task_id)

    thread = threading.Thread(target=worker)
    thread.start()
    blocks = parse(client.get(f"/tasks/{task_id}/events").data)
    thread.join()
    assert [block["event"] for block in blocks] == ["state", "progress", "progress", "end"]
    assert [block["id"] for block in blocks] == ["0", "1", "2", "3"]


def test_a_bad_last_event_id_is_a_422_naming_it(client: FlaskClient) -> None:
    task_id = submit(client)
    response = client.get(f"/tasks/{task_id}/events", headers={"Last-Event-ID": "yesterday"})
    assert response.status_code == 422
    assert response.get_json()["problems"][0]["parameter"] == "Last-Event-ID"


def test_every_event_of_a_stream_fits_the_documented_event_schema(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    """OpenAPI 3.1 reads a `text/event-stream` schema as the schema of each event
    (`{"event", "data", "id"}` with `data` as text): a schema of the whole stream fails fuzzing."""
    import jsonschema

    task_id = submit(client)
    write_progress(fake_redis, task_id, 50, "half")
    finish(fake_redis, task_id)
    document = client.get("/openapi.json").get_json()
    answer = document["paths"]["/tasks/{task_id}/events"]["get"]["responses"]["200"]
    event_schema = answer["content"]["text/event-stream"]["schema"]
    raw = client.get(f"/tasks/{task_id}/events", headers={"Last-Event-ID": "0"}).data.decode()
    events = [
        dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        for block in raw.split("\n\n")
        if block.strip() and not block.startswith(":")
    ]
    assert [event["event"] for event in events] == ["progress", "end"]
    for event in events:
        jsonschema.validate(event, event_schema)
        json.loads(event["data"])


# --- Prefer: wait on a submission -----------------------------------------------------------


def finish_when_queued(fake_redis: fakeredis.FakeRedis, result: Any = 3) -> threading.Thread:
    """A thread that ends the first task to appear on the queue, as a worker would."""

    def run() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            queued = fake_redis.lrange("rq:queue:analysis", 0, 0)
            if queued:
                time.sleep(0.1)  # the submission is waiting by now
                finish(fake_redis, queued[0].decode(), result)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_submission_with_prefer_wait_answers_200_when_the_task_ends(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    worker = finish_when_queued(fake_redis)
    response = client.post("/tasks/test/add?x=1&y=2", headers={"Prefer": "wait=10"})
    worker.join()
    body = response.get_json()
    assert response.status_code == 200 and body["status"] == "completed" and body["result"] == 3
    assert response.headers["Preference-Applied"] == "wait=10"
    assert response.headers["Location"] == f"/tasks/{body['task_id']}"


def test_a_submission_with_prefer_wait_reads_its_task_only_once_it_ended(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The waiter registers before the enqueue, so the task just enqueued is not read back
    before the wait: the only read is the one the end's message asks for."""
    from trustcard.task_service import TaskService

    reads: list[str] = []
    get = TaskService.get

    def counted_get(self: TaskService, task_id: str, **kwargs: Any) -> Any:
        reads.append(task_id)
        return get(self, task_id, **kwargs)

    monkeypatch.setattr(TaskService, "get", counted_get)
    worker = finish_when_queued(fake_redis)
    response = client.post("/tasks/test/add?x=1&y=2", headers={"Prefer": "wait=10"})
    worker.join()
    assert response.status_code == 200
    assert reads == [response.get_json()["task_id"]]


def test_a_submission_with_prefer_wait_answers_202_at_its_deadline(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    started = time.monotonic()
    response = client.post("/tasks/test/add?x=1&y=2", headers={"Prefer": "wait=0.5"})
    assert 0.5 <= time.monotonic() - started < 1.5
    assert response.status_code == 202 and response.get_json()["status"] == "submitted"
    # Watched from its admission, in the same script call, for the wait and a margin.
    assert 0 < fake_redis.pttl(task_events.watch_key(response.get_json()["task_id"])) <= 5500


def test_a_replayed_submission_with_prefer_wait_follows_the_earlier_task(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    first = client.post("/tasks/test/add?x=1&y=2", headers={"Idempotency-Key": "k-1"}).get_json()["task_id"]
    finish(fake_redis, first)
    again = client.post("/tasks/test/add?x=1&y=2", headers={"Idempotency-Key": "k-1", "Prefer": "wait=5"})
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["task_id"] == first and again.get_json()["result"] == 3


def test_wait_on_a_task_that_has_ended_is_one_plain_read(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No waiter registered and no watch key written: the read that finds it ended answers."""
    from trustcard.api.event_hub import EventHub

    task_id = submit(client)
    finish(fake_redis, task_id)
    registered: list[str] = []
    register = EventHub.register
    monkeypatch.setattr(EventHub, "register", lambda hub, tid: registered.append(tid) or register(hub, tid))
    response = client.get(f"/tasks/{task_id}?wait=10")
    assert response.status_code == 200 and response.get_json()["status"] == "completed"
    assert registered == []
    assert not fake_redis.exists(task_events.watch_key(task_id))
