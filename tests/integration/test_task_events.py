"""Pushed task state through the Procfile's web line (gunicorn, gevent) and a real worker:
`GET /tasks/<id>?wait=N` and the event stream `GET /tasks/<id>/events`.

Tests at the default settings share the module's stack and web process (`web_and_worker`,
from conftest); those that change a setting or stop Redis build their own."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
import redis
import requests

from tests.support.stack import Stack, WebProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

STAGES = [
    "Extracting Instagram content...",
    "Running AI detection...",
    "Checking for deepfakes...",
    "Fact-checking claims...",
    "Calculating trust score...",
]


def _parse_iso(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def submit(web: WebProcess, path: str, **params: Any) -> str:
    response = requests.post(f"{web.url}{path}", params=params, timeout=5)
    assert response.status_code == 202, response.text
    return str(response.json()["task_id"])


def read_events(response: requests.Response) -> Iterator[dict[str, Any]]:
    """Each SSE block as {"event", "id", "data"} (data parsed), comments as {"comment"}."""
    block: dict[str, Any] = {}
    for raw in response.iter_lines(decode_unicode=True):
        line = raw or ""
        if not line:
            if block:
                yield block
            block = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip(), "at": time.monotonic()}
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            block[name] = json.loads(value) if name == "data" else value
    if block:
        yield block


def test_wait_answers_within_100_ms_of_the_end(web_and_worker: tuple[Stack, WebProcess]) -> None:
    _, web = web_and_worker
    task_id = submit(web, "/tasks/test/sleep", seconds=1)
    response = requests.get(f"{web.url}/tasks/{task_id}", params={"wait": 10}, timeout=15)
    answered = time.time()
    task = response.json()
    assert response.status_code == 200 and task["status"] == "completed", task
    assert task["result"] == "Slept for 1 seconds"
    assert answered - _parse_iso(task["ended_at"]) < 0.1, task


def test_wait_answers_at_its_deadline_with_the_current_state(web_and_worker: tuple[Stack, WebProcess]) -> None:
    _, web = web_and_worker
    task_id = submit(web, "/tasks/test/sleep", seconds=5)
    started = time.monotonic()
    response = requests.get(f"{web.url}/tasks/{task_id}", params={"wait": 1.5}, timeout=10)
    elapsed = time.monotonic() - started
    assert response.status_code == 200 and response.json()["status"] in ("pending", "started"), response.text
    assert 1.5 <= elapsed < 2.5, elapsed
    cancelled = requests.delete(f"{web.url}/tasks/{task_id}", timeout=10)  # frees the shared worker
    assert cancelled.status_code in (200, 409), cancelled.text


def test_wait_on_an_ended_task_answers_at_once_and_old_calls_are_unchanged(
    web_and_worker: tuple[Stack, WebProcess],
) -> None:
    stack, web = web_and_worker
    task_id = submit(web, "/tasks/test/add", x=7, y=8)
    stack.wait_for(task_id)
    started = time.monotonic()
    waited = requests.get(f"{web.url}/tasks/{task_id}", params={"wait": 20}, timeout=5)
    assert time.monotonic() - started < 0.5
    plain = requests.get(f"{web.url}/tasks/{task_id}", timeout=5)
    assert waited.json() == plain.json() and plain.json()["result"] == 15


@pytest.mark.parametrize("wait", ["0", "26", "soon", "nan", "-1", ""])
def test_wait_out_of_range_is_a_422_naming_wait(web_and_worker: tuple[Stack, WebProcess], wait: str) -> None:
    _, web = web_and_worker
    task_id = submit(web, "/tasks/test/add", x=1, y=2)
    response = requests.get(f"{web.url}/tasks/{task_id}?wait={wait}", timeout=5)
    assert response.status_code == 422, response.text
    assert response.json()["problems"][0]["parameter"] == "wait"


def test_stream_shows_the_long_tasks_rising_progress_and_its_end(web_and_worker: tuple[Stack, WebProcess]) -> None:
    _, web = web_and_worker
    task_id = submit(web, "/tasks/test/long")
    with requests.get(f"{web.url}/tasks/{task_id}/events", stream=True, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"] == "no-cache" and response.headers["X-Accel-Buffering"] == "no"
        events = [block for block in read_events(response) if "event" in block]
    first, *progress, end = events
    assert first["event"] == "state" and first["data"]["task_id"] == task_id
    assert all(block["event"] == "progress" for block in progress)
    stages = [block["data"]["stage"] for block in progress]
    percents = [block["data"]["percent"] for block in progress]
    assert stages[-1] == "Done" and percents == sorted(percents) and percents[-1] == 100
    assert set(STAGES) - {first["data"]["progress"] and first["data"]["progress"]["stage"]} <= set(stages)
    ids = [int(block["id"]) for block in events]
    assert ids == sorted(ids) and len(set(ids[1:])) == len(ids) - 1
    assert end["event"] == "end" and end["data"]["status"] == "completed"
    assert end["data"] == requests.get(f"{web.url}/tasks/{task_id}", timeout=5).json()


def test_reconnect_with_last_event_id_misses_nothing(web_and_worker: tuple[Stack, WebProcess]) -> None:
    _, web = web_and_worker
    task_id = submit(web, "/tasks/test/long")
    seen: list[dict[str, Any]] = []
    with requests.get(f"{web.url}/tasks/{task_id}/events", stream=True, timeout=30) as response:
        for block in read_events(response):
            if block.get("event") == "progress":
                seen.append(block)
                if len(seen) == 2:
                    break  # the client drops the connection mid-task
    last_id = seen[-1]["id"]
    time.sleep(2.5)  # the task goes on while nobody listens: a stage passes unseen
    with requests.get(
        f"{web.url}/tasks/{task_id}/events", headers={"Last-Event-ID": last_id}, stream=True, timeout=30
    ) as response:
        rest = [block for block in read_events(response) if "event" in block]
    assert rest[0]["event"] == "progress" and int(rest[0]["id"]) == int(last_id) + 1, rest[0]
    resumed = [*seen, *rest[:-1]]
    ids = [int(block["id"]) for block in resumed]
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids  # no gap, no repeat
    assert [block["data"]["stage"] for block in resumed][-1] == "Done"
    assert rest[-1]["event"] == "end" and rest[-1]["data"]["status"] == "completed"
    # Having had the end, a client that reconnects once more is told there is nothing left.
    again = requests.get(
        f"{web.url}/tasks/{task_id}/events", headers={"Last-Event-ID": rest[-1]["id"]}, timeout=5
    )
    assert again.status_code == 204


def test_stream_of_an_unknown_task_is_the_json_404(web_and_worker: tuple[Stack, WebProcess]) -> None:
    _, web = web_and_worker
    response = requests.get(f"{web.url}/tasks/no-such-task/events", timeout=5)
    assert response.status_code == 404 and response.json()["error"] == "task_not_found"


def test_events_heartbeat_seconds_sets_the_comment_heartbeat(
    make_stack: Callable[..., Stack], start_web: Callable[..., WebProcess]
) -> None:
    stack = make_stack(EVENTS_HEARTBEAT_SECONDS="1")
    stack.start_worker()
    web = start_web(stack.env)
    task_id = submit(web, "/tasks/test/sleep", seconds=3.5)
    with requests.get(f"{web.url}/tasks/{task_id}/events", stream=True, timeout=30) as response:
        blocks = list(read_events(response))
    beats = [block["at"] for block in blocks if block.get("comment") == "keep-alive"]
    assert len(beats) >= 2, blocks
    gaps = [later - earlier for earlier, later in zip(beats, beats[1:])]
    assert all(0.7 < gap < 1.5 for gap in gaps), gaps
    assert blocks[-1]["event"] == "end" and blocks[-1]["data"]["status"] == "completed"


def test_a_wait_when_redis_goes_away_is_the_json_503_not_a_hang(
    make_stack: Callable[..., Stack], start_web: Callable[..., WebProcess], private_redis: Any
) -> None:
    stack = make_stack(private_redis.url)
    stack.start_worker()
    web = start_web(stack.env)
    task_id = submit(web, "/tasks/test/sleep", seconds=30)
    answers: list[requests.Response] = []
    waiting = threading.Thread(
        target=lambda: answers.append(requests.get(f"{web.url}/tasks/{task_id}", params={"wait": 20}, timeout=30))
    )
    waiting.start()
    # The web's listener subscribes for the waiting request, which then reads and waits.
    watcher = redis.Redis.from_url(private_redis.url)
    wait_until(lambda: watcher.execute_command("PUBSUB", "NUMPAT") == 1, 10, "the web's listener to subscribe")
    watcher.close()
    private_redis.stop()
    stopped = time.monotonic()
    waiting.join(15)
    assert answers, "the wait did not answer"
    assert time.monotonic() - stopped < 3
    response = answers[0]
    assert response.status_code == 503 and response.json()["error"] == "queue_unavailable", response.text
    assert response.headers["Retry-After"]


def test_only_a_watched_task_is_published(
    make_stack: Callable[..., Stack], start_web: Callable[..., WebProcess], private_redis: Any
) -> None:
    """Ends nobody waits on publish nothing, so they wake no web process's listener; a task
    with a `?wait` reader is announced, and its wait answers at once. Counted by Redis itself
    (PUBLISH calls, those from scripts included) on a private Redis with nothing else on it."""
    stack = make_stack(private_redis.url)
    stack.start_worker()
    web = start_web(stack.env)
    counter = redis.Redis.from_url(private_redis.url)

    def publishes() -> int:
        return int(counter.info("commandstats").get("cmdstat_publish", {}).get("calls", 0))

    def completed(task_id: str) -> bool:
        return bool(requests.get(f"{web.url}/tasks/{task_id}", timeout=5).json()["status"] == "completed")

    warm = submit(web, "/tasks/test/add", x=0, y=0)  # the event hub's listener, started by a wait
    assert requests.get(f"{web.url}/tasks/{warm}", params={"wait": 10}, timeout=15).json()["status"] == "completed"
    before = publishes()
    unwatched = [submit(web, "/tasks/test/add", x=index, y=1) for index in range(5)]
    for task_id in unwatched:
        wait_until(lambda task_id=task_id: completed(task_id), 30, f"task {task_id} to complete")
    assert publishes() == before
    watched = submit(web, "/tasks/test/sleep", seconds=1)
    response = requests.get(f"{web.url}/tasks/{watched}", params={"wait": 10}, timeout=15)
    answered = time.time()
    assert response.json()["status"] == "completed", response.text
    assert answered - _parse_iso(response.json()["ended_at"]) < 0.1
    assert publishes() == before + 1
    counter.close()
