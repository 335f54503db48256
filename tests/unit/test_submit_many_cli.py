"""`trustcard submit-many` against the app served over real HTTP (fakeredis behind it), as
tests/unit/test_cli.py serves it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import fakeredis
import pytest
from click.testing import CliRunner, Result
from rq.job import Job
from rq.serializers import JSONSerializer
from werkzeug.serving import make_server

from trustcard.api.app import create_app
from trustcard.cli.client import ApiError
from trustcard.cli.main import ExitCode, cli
from trustcard.cli.submit_many import Line, line_problems, read_tasks
from trustcard.config import load_settings

QUEUE = "rq:queue:analysis"
Serve = Callable[..., str]


@pytest.fixture
def serve(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> Iterator[Serve]:
    """Serve the app with the given settings on a free port; its URL."""
    stops: list[Callable[[], None]] = []

    def start(**env: str) -> str:
        settings = load_settings({"DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", **env})
        app = create_app(settings, redis=fake_redis)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        stops.append(lambda: (server.shutdown(), thread.join(5), app.extensions["trustcard.engine"].dispose()))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for stop in stops:
        stop()


def run(url: str, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--url", url, "submit-many", *args], input=stdin)


def write(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def add(x: int) -> str:
    return json.dumps({"type": "test.add", "params": {"x": x, "y": 1}})


def queued(redis: fakeredis.FakeRedis) -> list[str]:
    return [raw.decode() for raw in redis.lrange(QUEUE, 0, -1)]


def test_prints_the_task_ids_in_file_order(serve: Serve, tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    path = write(tmp_path, add(1), "", '{"type": "test.long"}', add(3))
    result = run(serve(), path)
    assert result.exit_code == 0, result.stderr
    ids = result.stdout.split()
    assert len(ids) == 3 and ids == queued(fake_redis)
    assert "3 tasks submitted" in result.stderr


def test_reads_stdin_and_prints_json(serve: Serve, fake_redis: fakeredis.FakeRedis) -> None:
    result = run(serve(), "-", "--json", stdin=f"{add(1)}\n{add(2)}\n")
    assert result.exit_code == 0, result.stderr
    tasks = json.loads(result.stdout)["tasks"]
    assert [task["name"] for task in tasks] == ["test.add", "test.add"]
    assert [task["task_id"] for task in tasks] == queued(fake_redis)


def test_sends_batches_of_the_batch_size_in_order(serve: Serve, tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    result = run(serve(), write(tmp_path, *(add(i) for i in range(5))), "--batch-size", "2")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == queued(fake_redis) and len(queued(fake_redis)) == 5
    jobs = [Job.fetch(task_id, connection=fake_redis, serializer=JSONSerializer) for task_id in queued(fake_redis)]
    assert [job.kwargs["x"] for job in jobs] == [0, 1, 2, 3, 4]


def test_bad_lines_are_named_by_number_and_nothing_is_sent(
    serve: Serve, tmp_path: Path, fake_redis: fakeredis.FakeRedis
) -> None:
    path = write(
        tmp_path, add(1), "{not json", '{"type": "test.nope"}', '{"type": "test.add", "params": {"x": 1}}',
        '["test.add"]', '{"type": "test.sleep", "params": {"seconds": 4000}}', '{"type": "test.long", "when": 1}',
    )
    result = run(serve(), path)
    assert result.exit_code == ExitCode.ERROR
    for expected in ("line 2: not JSON", "line 3: type 'test.nope' is not a job type", "line 4: y is required",
                     "line 5: not a JSON object", "line 6: seconds must be between 0 and 3600",
                     "line 7: when: not a field of a task", "6 bad lines; nothing was submitted"):
        assert expected in result.stderr, result.stderr
    assert result.stdout == "" and fake_redis.llen(QUEUE) == 0


def test_an_empty_file_is_a_usage_error(serve: Serve, tmp_path: Path) -> None:
    result = run(serve(), write(tmp_path, ""))
    assert result.exit_code == ExitCode.ERROR and "no tasks" in result.stderr


def test_rate_limit_burst_and_per_minute_settings_it_waits_and_sends_the_batch_again(
    serve: Serve, tmp_path: Path, fake_redis: fakeredis.FakeRedis
) -> None:
    """RATE_LIMIT_BURST=3, RATE_LIMIT_PER_MINUTE=120: the second batch of 2 waits 1 s for its token."""
    url = serve(RATE_LIMIT_BURST="3", RATE_LIMIT_PER_MINUTE="120")
    result = run(url, write(tmp_path, *(add(i) for i in range(4))), "--batch-size", "2")
    assert result.exit_code == 0, result.stderr
    assert "rate limited; sending lines 3-4 again in 1 s" in result.stderr
    assert result.stdout.split() == queued(fake_redis) and len(queued(fake_redis)) == 4  # none twice


def test_an_api_refusal_names_the_file_lines() -> None:
    batch = [Line(3, {}), Line(7, {})]
    error = ApiError(422, "validation_error", "Invalid batch", {"problems": [
        {"parameter": "tasks[1].params.x", "problem": "is required"},
        {"parameter": "Callback-URL", "problem": "is refused"},
    ]})
    assert line_problems(error, batch) == ["line 7: params.x is required", "lines 3-7: Callback-URL is refused"]


def test_read_tasks_keeps_type_and_params_only() -> None:
    tasks, problems = read_tasks(['{"type": "test/add", "params": {"x": 1, "y": 2}}', "  ", '{"type": "test.long"}'])
    assert problems == []
    assert [(line.number, line.task) for line in tasks] == [
        (1, {"type": "test.add", "params": {"x": 1, "y": 2}}), (3, {"type": "test.long", "params": {}})
    ]
