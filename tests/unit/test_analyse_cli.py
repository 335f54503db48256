"""`trustcard analyse URL --wait`: the installed command against a served app, stages run here.

The app is served behind `Gate`, a WSGI middleware that records every request and, when a
test asks, refuses the event stream (an older server) or cuts it (a proxy), so each test
sees what the command asked for: the stream, its Last-Event-ID on a resume, or status reads.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import IO, Any

import fakeredis
import pytest
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer
from werkzeug.serving import make_server

from tests.support.migrations import upgrade
from tests.support.waiting import wait_until
from tests.unit.test_analyses import work
from trustcard.api.app import create_app
from trustcard.catalogue import QUEUE_NAMES
from trustcard.cli.progress import STREAM_RESUMES
from trustcard.config import load_settings
from workers import storage

TRUSTCARD = Path(sys.executable).parent / "trustcard"


StartResponse = Callable[..., Any]


class Gate:
    """In front of the served app: records each request as (method, path, Last-Event-ID);
    `refuse_streams` answers every event stream with that status, as a server without
    streams does; `stream_events` lets the next streams through for that many events each,
    then ends them (0: not one); `hold_stream` keeps the stream after those waiting."""

    def __init__(self, app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]]) -> None:
        self.app = app
        self.requests: list[tuple[str, str, str | None]] = []
        self.refuse_streams: int | None = None
        self.stream_events: list[int] = []
        self.hold_stream = threading.Event()
        self.hold_stream.set()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        self.requests.append((environ["REQUEST_METHOD"], path, environ.get("HTTP_LAST_EVENT_ID")))
        if not path.endswith("/events"):
            return self.app(environ, start_response)
        if self.refuse_streams is not None:
            start_response(f"{self.refuse_streams} {HTTPStatus(self.refuse_streams).phrase}",
                           [("Content-Type", "application/json")])
            return [b'{"error": "not_found", "message": "No such path."}']
        if self.stream_events:
            return self._cut(self.app(environ, start_response), self.stream_events.pop(0))
        self.hold_stream.wait(30)
        return self.app(environ, start_response)

    @staticmethod
    def _cut(body: Iterable[bytes], events: int) -> Iterator[bytes]:
        try:
            for chunk in body if events > 0 else ():
                yield chunk
                events -= not chunk.startswith(b":")  # comments (heartbeats) are not events
                if events <= 0:
                    return  # at once: the next chunk may be a heartbeat away
        finally:
            getattr(body, "close", lambda: None)()

    def streams(self) -> list[str | None]:
        """The Last-Event-ID of each event stream opened so far (None: from the start)."""
        return [last for _, path, last in self.requests if path.endswith("/events")]

    def status_reads(self) -> list[str]:
        return [path for method, path, _ in self.requests
                if method == "GET" and path.startswith("/analyses/") and not path.endswith("/events")]


@pytest.fixture
def gated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, fakeredis.FakeRedis, Gate]]:
    yield from _serve(tmp_path, monkeypatch)


@pytest.fixture
def served(gated: tuple[str, fakeredis.FakeRedis, Gate]) -> tuple[str, fakeredis.FakeRedis]:
    url, redis, _ = gated
    return url, redis


def _serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, fakeredis.FakeRedis, Gate]]:
    database = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(database)
    monkeypatch.setenv("DATABASE_URL", database)
    monkeypatch.setattr(storage, "_engine", None)
    redis = fakeredis.FakeRedis()
    app = create_app(load_settings({"DATABASE_URL": database, "SECRET_KEY": "unit"}), redis=redis)
    gate = Gate(app)
    server = make_server("127.0.0.1", 0, gate, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", redis, gate
    gate.hold_stream.set()
    server.shutdown()
    thread.join(5)
    app.extensions["trustcard.engine"].dispose()
    storage.engine().dispose()
    monkeypatch.setattr(storage, "_engine", None)


def test_analyse_wait_follows_the_stages_and_prints_the_result(served: tuple[str, fakeredis.FakeRedis]) -> None:
    url, redis = served
    command = subprocess.Popen(
        [str(TRUSTCARD), "--url", url, "analyse", "https://instagram.com/p/CLI1/", "--wait"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while command.poll() is None and time.monotonic() < deadline:
        work(redis)  # the stages run in this process, as a worker would run them
        time.sleep(0.05)
    out, err = command.communicate(timeout=10)
    assert command.returncode == 0, err
    assert json.loads(out)["trust_score"] is None and set(json.loads(out)["stages"]) >= {"content", "trust"}
    assert err.splitlines()[0].startswith("analysis ") and err.splitlines()[0].endswith("of https://www.instagram.com/p/CLI1/")
    assert "completed" in err.splitlines()[-1]


def test_analyse_refuses_a_url_that_is_not_a_post_with_exit_3(served: tuple[str, fakeredis.FakeRedis]) -> None:
    url, _ = served
    done = subprocess.run([str(TRUSTCARD), "--url", url, "analyse", "https://example.com/p/X/"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 3
    assert "url is on 'example.com', not Instagram" in done.stderr and "validation_error, HTTP 422" in done.stderr


# --- following on the event stream, resuming it, polling without it --------------------

STAGE_LINES = ["[  0%] content", "[ 20%] ai_detection", "[ 40%] deepfake_detection", "[ 60%] fact_check",
               "[ 80%] trust", "[100%] completed"]
"""What `--wait` prints on a stderr that is not a terminal: each stage once it is due (the one
before it completed), then the end; the same from the stream as from polling."""


class Following:
    """`trustcard analyse URL --wait` running, its stderr read line by line as it comes."""

    def __init__(self, url: str, post: str) -> None:
        self.process = subprocess.Popen(
            [str(TRUSTCARD), "--url", url, "analyse", post, "--wait"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, args=(self.process.stderr,), daemon=True)
        self.reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def stage_lines(self) -> list[str]:
        return [line for line in self.lines if line.startswith("[")]

    def finish(self) -> tuple[int, Any]:
        out = self.process.stdout.read() if self.process.stdout else ""
        code = self.process.wait(30)
        self.reader.join(10)
        return code, json.loads(out) if out.strip() else None

    def kill(self) -> None:
        """End it if it still runs, and close its pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self.reader.join(10)
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def following() -> Iterator[Callable[[str, str], Following]]:
    started: list[Following] = []

    def start(url: str, post: str) -> Following:
        started.append(Following(url, post))
        return started[-1]

    yield start
    for command in started:
        command.kill()


def run_one_stage(redis: fakeredis.FakeRedis) -> None:
    """Run the one stage job that is queued, as a worker would (it queues the next stage)."""
    queues = [Queue(name, connection=redis, serializer=JSONSerializer) for name in (*QUEUE_NAMES, "probes")]
    assert any(queue.count for queue in queues), "no stage job is queued"
    SimpleWorker(queues, connection=redis, serializer=JSONSerializer).work(burst=True, max_jobs=1)


def step_through(command: Following, redis: fakeredis.FakeRedis, first: int = 0) -> None:
    """Run the stages one at a time from stage `first`, each once the command has shown it."""
    for shown in range(first + 1, len(STAGE_LINES)):
        run_one_stage(redis)
        wait_until(lambda: len(command.stage_lines()) >= shown + 1 or command.process.poll() is not None,
                   20, f"the command to show {STAGE_LINES[shown]!r}")


def test_analyse_wait_shows_each_stage_as_it_comes_from_the_stream_without_polling(
    gated: tuple[str, fakeredis.FakeRedis, Gate], following: Callable[[str, str], Following]
) -> None:
    url, redis, gate = gated
    command = following(url, "https://instagram.com/p/STREAM1/")
    wait_until(lambda: command.stage_lines(), 20, "the command to show the analysis waiting")
    step_through(command, redis)
    code, result = command.finish()
    assert code == 0, command.lines
    assert command.stage_lines() == STAGE_LINES
    assert result["trust_score"] is None and list(result["stages"]) == [line.split()[-1] for line in STAGE_LINES[:-1]]
    assert gate.streams() == [None] and gate.status_reads() == []  # pushed, never polled


def test_a_cut_stream_is_resumed_from_its_last_event_id_and_misses_no_stage(
    gated: tuple[str, fakeredis.FakeRedis, Gate], following: Callable[[str, str], Following]
) -> None:
    url, redis, gate = gated
    gate.stream_events = [1]  # the first stream ends after its first event (the state)
    gate.hold_stream.clear()  # and its resume waits until two stages have run
    command = following(url, "https://instagram.com/p/RESUME1/")
    wait_until(lambda: len(gate.streams()) == 2, 20, "the command to open the stream again")
    run_one_stage(redis)
    run_one_stage(redis)  # two stages start and end while the command has no stream
    assert command.stage_lines() == STAGE_LINES[:1]
    gate.hold_stream.set()
    wait_until(lambda: len(command.stage_lines()) >= 3, 20, "the replayed stages to be shown")
    step_through(command, redis, first=2)
    code, _ = command.finish()
    assert code == 0, command.lines
    assert command.stage_lines() == STAGE_LINES  # the two run meanwhile each shown, in order
    assert gate.streams() == [None, "0"] and gate.status_reads() == []


def test_a_stream_that_does_not_resume_is_polled_instead(
    gated: tuple[str, fakeredis.FakeRedis, Gate], following: Callable[[str, str], Following]
) -> None:
    url, redis, gate = gated
    gate.stream_events = [1] + [0] * STREAM_RESUMES  # cut, then every resume ends before an event
    command = following(url, "https://instagram.com/p/NORESUME1/")
    wait_until(lambda: gate.status_reads(), 20, "the command to poll")
    step_through(command, redis)
    code, result = command.finish()
    assert code == 0 and set(result) == {"trust_score", "stages"}, command.lines
    assert command.stage_lines() == STAGE_LINES
    assert gate.streams() == [None] + ["0"] * STREAM_RESUMES  # each resume from the last event seen


@pytest.mark.parametrize("status", [404, 405, 406])
def test_against_a_server_without_streams_analyse_wait_polls(
    gated: tuple[str, fakeredis.FakeRedis, Gate], following: Callable[[str, str], Following], status: int
) -> None:
    url, redis, gate = gated
    gate.refuse_streams = status
    command = following(url, "https://instagram.com/p/POLL1/")
    wait_until(lambda: command.stage_lines(), 20, "the command to show the analysis waiting")
    step_through(command, redis)
    code, result = command.finish()
    assert code == 0 and set(result) == {"trust_score", "stages"}, command.lines
    assert command.stage_lines() == STAGE_LINES
    assert gate.streams() == [None] and gate.status_reads()  # asked once, then polled
