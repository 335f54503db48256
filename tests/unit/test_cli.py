"""The `trustcard` command against the app served over real HTTP (fakeredis behind it).

The app runs in a werkzeug server thread, so the CLI's own HTTP client is exercised. No
worker process runs here: tasks that must end are run by an in-process `SimpleWorker` on
the same fakeredis. `submit --wait` against real workers is in tests/integration.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from click.testing import CliRunner, Result
from rq import Queue, SimpleWorker
from rq.serializers import JSONSerializer
from werkzeug.serving import make_server

from tests.support.ports import free_port
from trustcard.api.app import create_app
from trustcard.catalogue import JOB_TYPES, QUEUE_NAMES
from trustcard.cli import main as cli_main
from trustcard.cli.client import ApiError, ConnectionFailed, Event, NoEventStream, parse_event_stream
from trustcard.cli.main import ExitCode, cli, parse_param
from trustcard.cli.progress import STREAM_RESUMES, LiveBar, Silent, StageLines, follow, follow_events
from trustcard.config import load_settings
from workers.job import CatalogueJob

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "cli-key"
COMMANDS = ("submit", "submit-many", "status", "cancel", "running", "health", "types")


class Api:
    """The app served on a free port, and a way to run the queued jobs in this process."""

    def __init__(self, url: str, redis: fakeredis.FakeRedis) -> None:
        self.url = url
        self.redis = redis

    def run_queued_jobs(self) -> None:
        queues = [Queue(name, connection=self.redis, serializer=JSONSerializer) for name in QUEUE_NAMES]
        worker = SimpleWorker(queues, connection=self.redis, serializer=JSONSerializer, job_class=CatalogueJob)
        worker.work(burst=True)


@pytest.fixture
def api(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> Iterator[Api]:
    settings = load_settings({
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "API_KEY": API_KEY,
        "JOB_SOFT_TIMEOUT": "1",
        "JOB_TIMEOUT": "5",
    })
    app = create_app(settings, redis=fake_redis)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Api(f"http://127.0.0.1:{server.server_port}", fake_redis)
    server.shutdown()
    thread.join(5)
    app.extensions["trustcard.engine"].dispose()


def run(api: Api, *args: str, api_key: str = API_KEY) -> Result:
    return CliRunner().invoke(cli, ["--url", api.url, "--api-key", api_key, *args])


def submitted_id(api: Api, *args: str) -> str:
    result = run(api, "--json", "submit", *args)
    assert result.exit_code == 0, result.stderr
    return str(json.loads(result.stdout)["task_id"])


# Parameters and usage ------------------------------------------------------------------


def test_parameters_parse_as_json_or_text() -> None:
    assert parse_param("x=7") == ("x", 7)
    assert parse_param("x=2.5") == ("x", 2.5)
    assert parse_param("flag=true") == ("flag", True)
    assert parse_param('x="7"') == ("x", "7")
    assert parse_param("message=hello world") == ("message", "hello world")
    assert parse_param("url=https://www.instagram.com/p/A/") == ("url", "https://www.instagram.com/p/A/")
    assert parse_param("empty=") == ("empty", "")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["submit", "nothing.here"], "unknown job type 'nothing.here'; one of: test.add"),
        (["submit", "test.add", "x"], "'x' is not NAME=VALUE"),
        (["submit", "test.add", "x=1", "x=2"], "x is given twice"),
        (["submit"], "Missing argument 'JOB_TYPE'"),
        (["frobnicate"], "No such command 'frobnicate'"),
    ],
)
def test_usage_errors_exit_3_without_calling_the_api(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(cli, ["--url", f"http://127.0.0.1:{free_port()}", *args])
    assert result.exit_code == ExitCode.ERROR, result.output
    assert expected in result.stderr and "cannot reach" not in result.stderr


def test_help_of_every_command_reads_and_documents_exit_status() -> None:
    top = CliRunner().invoke(cli, ["--help"])
    assert top.exit_code == 0
    for command in COMMANDS:
        assert command in top.stdout
    for line in ("0    the command worked", "1    the task failed", "2    the task was cancelled", "3    a usage"):
        assert line in top.stdout
    assert "TRUSTCARD_URL" in top.stdout and "API_KEY" in top.stdout
    for command in COMMANDS:
        result = CliRunner().invoke(cli, [command, "--help"])
        assert result.exit_code == 0 and f"Usage: trustcard {command}" in result.stdout, command
        assert "--json" in result.stdout, command
    submit_help = CliRunner().invoke(cli, ["submit", "-h"]).stdout
    assert "--wait" in submit_help and "trustcard submit test.add x=7 y=8 --wait" in submit_help


def test_the_script_is_declared_and_installed() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert declared == {"trustcard": "trustcard.cli.main:main"}
    installed = {point.name: point.value for point in entry_points(group="console_scripts")}
    assert installed.get("trustcard") == "trustcard.cli.main:main", "run `pip install -e .`"


def test_the_cli_does_not_load_flask_or_rq() -> None:
    code = "import sys, trustcard.cli.main; print(sorted(m for m in ('flask', 'rq', 'sqlalchemy') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert loaded.stdout.strip() == "[]"


# Commands against the API ---------------------------------------------------------------


def test_submit_status_cancel_running_in_json(api: Api) -> None:
    result = run(api, "--json", "submit", "test.add", "x=7", "y=8")
    submitted = json.loads(result.stdout)
    assert result.exit_code == 0 and submitted["status"] == "submitted" and submitted["name"] == "test.add"
    task_id = submitted["task_id"]
    result = run(api, "--json", "status", task_id)
    assert result.exit_code == 0 and json.loads(result.stdout)["status"] == "pending"
    result = run(api, "cancel", task_id, "--json")  # --json also after the command
    assert result.exit_code == 0 and json.loads(result.stdout)["status"] == "cancelled"
    result = run(api, "running", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == {"tasks": [], "count": 0}


def test_plain_output_and_slash_names(api: Api) -> None:
    result = run(api, "submit", "test/sleep", "seconds=1")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("task_id:") and lines[1].split() == ["status:", "submitted"]
    task_id = lines[0].split()[1]
    shown = run(api, "status", task_id)
    assert shown.exit_code == 0
    assert f"task_id:      {task_id}" in shown.stdout and "name:         test.sleep" in shown.stdout
    assert run(api, "running").stdout == "0 running\n"


def test_health_shows_redis_database_workers_and_queues(api: Api) -> None:
    submitted_id(api, "test.add", "x=1", "y=2")
    result = run(api, "--json", "health")
    answer = json.loads(result.stdout)
    assert result.exit_code == 0 and answer["redis"] == "connected" and answer["workers"] == 0
    assert answer["queues"] == {"webhooks": 0, "analysis": 1, "models": 0, "ingest": 0}
    plain = run(api, "health")
    assert plain.exit_code == 0
    assert plain.stdout.splitlines() == [
        "status:   healthy", "redis:    connected", "database: connected", "workers:  0",
        "queues:   webhooks=0 analysis=1 models=0 ingest=0",
    ]


def test_types_lists_every_job_type_with_its_parameters() -> None:
    result = CliRunner().invoke(cli, ["types"])
    assert result.exit_code == 0
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert set(rows) == {kind.name for kind in JOB_TYPES}
    assert "x=<number> y=<number>" in rows["test.add"] and "[message=<string>]" in rows["test.fail"]
    listing = json.loads(CliRunner().invoke(cli, ["types", "--json"]).stdout)
    by_name = {kind["name"]: kind for kind in listing}
    assert [p["name"] for p in by_name["test.add"]["parameters"]] == ["x", "y"]
    assert by_name["test.fail"]["parameters"][0] | {"description": None} == {
        "name": "message", "type": "string", "required": False, "default": "failed on purpose", "description": None,
    }


# Errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["submit", "test.sleep", "seconds=abc"], "seconds must be a number. (validation_error, HTTP 422)"),
        (["submit", "test.add", "x=1", "y=2", "z=3"], "z is not a parameter of this task"),
        (["status", "no-such-task"], "(task_not_found, HTTP 404)"),
        (["cancel", "no-such-task"], "(task_not_found, HTTP 404)"),
    ],
)
def test_api_errors_are_one_line_on_stderr_and_exit_3(api: Api, args: list[str], expected: str) -> None:
    result = run(api, *args)
    assert result.exit_code == ExitCode.ERROR
    assert result.stderr.startswith("trustcard: ") and expected in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr and result.stdout == ""


def test_a_wrong_api_key_says_which_setting_to_fix(api: Api) -> None:
    result = run(api, "running", api_key="wrong")
    assert result.exit_code == ExitCode.ERROR
    assert "(unauthorized, HTTP 401, set --api-key or API_KEY)" in result.stderr


def test_cancelling_an_ended_task_is_an_error(api: Api) -> None:
    task_id = submitted_id(api, "test.add", "x=1", "y=2")
    assert run(api, "cancel", task_id).exit_code == 0
    again = run(api, "cancel", task_id)
    assert again.exit_code == ExitCode.ERROR and "task_already_ended, HTTP 409" in again.stderr


def test_an_unreachable_api_is_one_line_and_exit_3() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(cli, ["--url", url, "health"])
    assert result.exit_code == ExitCode.ERROR
    assert result.stderr.startswith(f"trustcard: cannot reach {url}: ") and "TRUSTCARD_URL" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_url_without_scheme_is_refused_clearly() -> None:
    result = CliRunner().invoke(cli, ["--url", "localhost:8000", "health"])
    assert result.exit_code == ExitCode.ERROR and "cannot reach localhost:8000" in result.stderr


def test_url_and_key_come_from_the_environment(api: Api) -> None:
    result = CliRunner().invoke(cli, ["--json", "running"], env={"TRUSTCARD_URL": api.url, "API_KEY": API_KEY})
    assert result.exit_code == 0 and json.loads(result.stdout)["count"] == 0
    result = CliRunner().invoke(cli, ["running"], env={"TRUSTCARD_URL": api.url, "API_KEY": ""})
    assert result.exit_code == ExitCode.ERROR and "HTTP 401" in result.stderr


def test_the_installed_entry_point_exits_with_our_codes(
    api: Api, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.argv", ["trustcard", "--url", api.url, "--api-key", API_KEY, "status", "nope"])
    with pytest.raises(SystemExit) as exited:
        cli_main.main()
    assert exited.value.code == ExitCode.ERROR and "task_not_found" in capsys.readouterr().err


# Waiting for the outcome ----------------------------------------------------------------


def test_wait_prints_the_result_and_exits_0_when_completed(api: Api) -> None:
    task_id = submitted_id(api, "test.add", "x=7", "y=8")
    api.run_queued_jobs()
    result = run(api, "status", task_id, "--wait")
    assert (result.exit_code, result.stdout) == (0, "15\n")
    assert "[100%] completed" in result.stderr  # CliRunner's stderr is not a terminal: one line per step
    as_json = run(api, "--json", "status", task_id, "--wait")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["result"] == 15 and as_json.stderr == ""


def test_wait_exits_1_with_the_error_when_the_task_failed(api: Api) -> None:
    task_id = submitted_id(api, "test.sleep", "seconds=3")  # over the 1 s soft limit of these settings
    api.run_queued_jobs()
    result = run(api, "status", task_id, "--wait")
    assert result.exit_code == ExitCode.FAILED and result.stdout == ""
    assert f"task {task_id} failed: Timed out" in result.stderr
    as_json = run(api, "--json", "status", task_id, "--wait")
    answer = json.loads(as_json.stdout)
    assert as_json.exit_code == ExitCode.FAILED
    assert answer["status"] == "failed" and answer["error"].startswith("Timed out")


def test_wait_exits_2_when_the_task_was_cancelled(api: Api) -> None:
    task_id = submitted_id(api, "test.long")
    assert run(api, "cancel", task_id).exit_code == 0
    result = run(api, "status", task_id, "--wait")
    assert result.exit_code == ExitCode.CANCELLED
    assert f"task {task_id} cancelled: Cancelled on request." in result.stderr


def test_ctrl_c_stops_following_but_not_the_task(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    task_id = submitted_id(api, "test.long")

    def interrupted(*_: Any) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr("trustcard.cli.client.ApiClient.task", interrupted)
    monkeypatch.setattr("trustcard.cli.client.ApiClient.events", interrupted)  # Ctrl-C on the stream
    result = run(api, "status", task_id, "--wait")
    assert result.exit_code == ExitCode.INTERRUPTED
    assert f"it carries on: trustcard status {task_id} --wait" in result.stderr
    monkeypatch.undo()
    assert json.loads(run(api, "--json", "status", task_id).stdout)["status"] == "pending"


# The progress display, on scripted answers ----------------------------------------------

LONG_TASK_ANSWERS = [
    {"status": "pending", "progress": None},
    {"status": "started", "progress": None},
    {"status": "started", "progress": {"percent": 0, "stage": "Extracting Instagram content..."}},
    {"status": "started", "progress": {"percent": 0, "stage": "Extracting Instagram content..."}},
    {"status": "started", "progress": {"percent": 40, "stage": "Checking for deepfakes..."}},
    {"status": "completed", "progress": {"percent": 100, "stage": "Done"}, "result": {"ok": True}},
]


def scripted(answers: list[Any]) -> Callable[[], dict[str, Any]]:
    """A fetch function that gives each answer in turn; exceptions in the list are raised."""
    pending = list(answers)

    def fetch() -> dict[str, Any]:
        answer = pending.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return dict(answer)

    return fetch


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_stage_lines_name_each_new_stage_once() -> None:
    stream = io.StringIO()
    clock = FakeClock()
    task = follow(scripted(LONG_TASK_ANSWERS), StageLines(stream), clock=clock, sleep=clock.sleep)
    assert task["result"] == {"ok": True}
    assert stream.getvalue().splitlines() == [
        "[  0%] waiting",
        "[  0%] running",
        "[  0%] Extracting Instagram content...",
        "[ 40%] Checking for deepfakes...",
        "[100%] Done",
    ]


def test_the_live_bar_redraws_in_place_with_percent_and_stage() -> None:
    stream = Terminal()
    clock = FakeClock()
    follow(scripted(LONG_TASK_ANSWERS), LiveBar(stream), clock=clock, sleep=clock.sleep)
    drawn = re.sub(r"\x1b\[\?25[lh]", "", stream.getvalue())  # hide/show the cursor while drawing
    frames = [frame.strip() for frame in drawn.split("\r") if frame.strip()]
    assert frames[0].startswith("waiting") and frames[0].endswith("0%")
    assert any(f.startswith("running") and f.endswith("0%  Extracting Instagram content...") for f in frames)
    assert any("[############------------------]   40%  Checking for deepfakes..." in f for f in frames)
    assert "completed  [##############################]  100%  Done" in frames[-1]
    assert drawn.endswith("\n")  # the bar's line is finished, the prompt comes back clean


def test_silent_display_for_json_writes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    clock = FakeClock()
    follow(scripted(LONG_TASK_ANSWERS), Silent(), clock=clock, sleep=clock.sleep)
    assert capsys.readouterr() == ("", "")


def test_following_rides_out_a_short_outage_but_not_a_long_one() -> None:
    clock = FakeClock()
    outage = [ConnectionFailed("refused"), ApiError(503, "unavailable", ""), ApiError(429, "rate_limited", "")] * 10
    task = follow(scripted([*outage, LONG_TASK_ANSWERS[-1]]), Silent(), clock=clock, sleep=clock.sleep)
    assert task["status"] == "completed" and clock.now == pytest.approx(30 * 0.25)
    long_outage = FakeClock()
    with pytest.raises(ConnectionFailed):
        follow(scripted([ConnectionFailed("refused")] * 200), Silent(), reconnect_seconds=5, clock=long_outage,
               sleep=long_outage.sleep)
    assert 5 < long_outage.now <= 5.5  # gave up once five seconds had passed without an answer


def test_following_stops_at_once_on_a_client_error() -> None:
    clock = FakeClock()
    with pytest.raises(ApiError) as raised:
        follow(scripted([ApiError(404, "task_not_found", "gone"), *LONG_TASK_ANSWERS]), Silent(), clock=clock,
               sleep=clock.sleep)
    assert raised.value.status == 404 and clock.now == 0


# --- following on the event stream --------------------------------------------------------

END_VIEW = {"task_id": "t-1", "status": "completed", "result": 15, "error": None, "progress": None}


def stream_bytes(*events: tuple[str, str, object]) -> list[bytes]:
    lines: list[bytes] = [b": keep-alive\n", b"\n"]
    for name, event_id, data in events:
        lines += [f"event: {name}\n".encode(), f"id: {event_id}\n".encode(),
                  f"data: {json.dumps(data)}\n".encode(), b"\n"]
    return lines


def test_an_event_stream_parses_into_named_events_with_ids_and_json() -> None:
    events = list(parse_event_stream(stream_bytes(
        ("progress", "1", {"percent": 20, "stage": "Running AI detection..."}), ("end", "2", END_VIEW)
    )))
    assert [(event.name, event.id) for event in events] == [("progress", "1"), ("end", "2")]
    assert events[0].data["stage"] == "Running AI detection..." and events[1].data == END_VIEW
    multi_line = list(parse_event_stream([b"data: {\"a\":\n", b"data: 1}\n", b"\n"]))
    assert multi_line == [Event("message", None, {"a": 1})]


def test_following_events_shows_progress_and_returns_the_end_without_polling() -> None:
    display = StageLines(io.StringIO())
    stream = stream_bytes(("progress", "1", {"percent": 20, "stage": "Running AI detection..."}),
                          ("progress", "2", {"percent": 40, "stage": "Checking for deepfakes..."}),
                          ("end", "3", END_VIEW))
    polled: list[int] = []
    task = follow_events(lambda _last: parse_event_stream(stream), lambda: polled.append(1) or {}, display)
    assert task == END_VIEW and polled == []
    assert display.stream.getvalue().splitlines() == [
        "[ 20%] Running AI detection...", "[ 40%] Checking for deepfakes...", "[100%] completed"
    ]


def test_a_broken_stream_is_opened_again_from_the_last_event_id() -> None:
    opened: list[str | None] = []

    def open_stream(last_id: str | None) -> Iterator[Event]:
        opened.append(last_id)
        if len(opened) == 1:
            yield from parse_event_stream(stream_bytes(("progress", "1", {"percent": 20, "stage": "a"})))
            raise ConnectionFailed("reset")
        yield from parse_event_stream(stream_bytes(("end", "2", END_VIEW)))

    clock = FakeClock()
    task = follow_events(open_stream, lambda: {}, Silent(), clock=clock, sleep=clock.sleep)
    assert task == END_VIEW and opened == [None, "1"]


def test_a_server_without_event_streams_is_polled_instead() -> None:
    def no_stream(_last: str | None) -> Iterator[Event]:
        raise NoEventStream("HTTP 404")
        yield  # pragma: no cover

    answers = iter(LONG_TASK_ANSWERS)
    clock = FakeClock()
    task = follow_events(no_stream, lambda: next(answers), Silent(), clock=clock, sleep=clock.sleep)
    assert task["status"] == "completed" and clock.now > 0  # it polled


def test_a_stream_that_keeps_failing_gives_up_after_the_reconnect_window() -> None:
    opened: list[str | None] = []

    def refused(last_id: str | None) -> Iterator[Event]:
        opened.append(last_id)
        raise ConnectionFailed("refused")
        yield  # pragma: no cover

    polled: list[float] = []

    def down() -> dict[str, Any]:
        polled.append(clock.now)
        raise ConnectionFailed("refused")

    clock = FakeClock()
    with pytest.raises(ConnectionFailed):
        follow_events(refused, down, Silent(), reconnect_seconds=5, clock=clock, sleep=clock.sleep)
    assert 5 < clock.now <= 5.5  # one window in all: the stream's openings, then polling
    assert len(opened) == 1 + STREAM_RESUMES and polled and polled[0] == pytest.approx(STREAM_RESUMES * 0.25)


def test_a_stream_that_breaks_and_does_not_resume_is_polled_after_its_resumes() -> None:
    opened: list[str | None] = []

    def cut(last_id: str | None) -> Iterator[Event]:
        opened.append(last_id)
        if len(opened) == 1:
            yield from parse_event_stream(stream_bytes(("progress", "3", {"percent": 20, "stage": "a"})))
        raise ConnectionFailed("reset")  # a proxy that cuts every stream, before any event once resumed

    display = StageLines(io.StringIO())
    clock = FakeClock()
    task = follow_events(cut, scripted([END_VIEW]), display, clock=clock, sleep=clock.sleep)
    assert task == END_VIEW
    assert opened == [None] + ["3"] * STREAM_RESUMES  # every resume from the last event seen
    assert display.stream.getvalue().splitlines() == ["[ 20%] a", "[100%] completed"]
