"""The `trustcard` command against the app served over real HTTP (fakeredis behind it)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from click.testing import CliRunner
from werkzeug.serving import make_server

from trustcard.app import create_app
from trustcard.cli.main import cli, main, parse_param
from trustcard.config import load_settings


@pytest.fixture
def api_url(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> Iterator[str]:
    settings = load_settings({"DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "API_KEY": "cli-key"})
    server = make_server("127.0.0.1", 0, create_app(settings, redis=fake_redis), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def run(api_url: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--url", api_url, "--api-key", "cli-key", *args])
    return result.exit_code, result.stdout, result.stderr


def test_parameters_parse_as_json_or_text() -> None:
    assert parse_param("x=7") == ("x", 7)
    assert parse_param("x=2.5") == ("x", 2.5)
    assert parse_param("url=https://www.instagram.com/p/A/") == ("url", "https://www.instagram.com/p/A/")


def test_submit_status_cancel_running_in_json(api_url: str) -> None:
    code, out, _ = run(api_url, "--json", "submit", "test.add", "x=7", "y=8")
    submitted = json.loads(out)
    assert code == 0 and submitted["status"] == "submitted"
    code, out, _ = run(api_url, "--json", "status", submitted["task_id"])
    assert code == 0 and json.loads(out)["status"] == "pending"
    code, out, _ = run(api_url, "--json", "cancel", submitted["task_id"])
    assert code == 0 and json.loads(out)["status"] == "cancelled"
    code, out, _ = run(api_url, "--json", "running")
    assert code == 0 and json.loads(out) == {"tasks": [], "count": 0}


def test_slash_names_and_plain_output(api_url: str) -> None:
    code, out, _ = run(api_url, "submit", "test/sleep", "seconds=1")
    assert code == 0 and "status: submitted" in out


def test_health_and_types(api_url: str) -> None:
    code, out, _ = run(api_url, "--json", "health")
    assert code == 0 and json.loads(out)["redis"] == "connected"
    code, out, _ = run(api_url, "types")
    assert code == 0 and "test.add" in out and "x=... y=..." in out


def test_api_errors_are_one_line_and_exit_3(api_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for args, expected in [
        (["submit", "test.sleep", "seconds=abc"], "seconds must be a number"),
        (["status", "no-such-task"], "task_not_found"),
        (["--api-key", "wrong", "running"], "unauthorized"),
    ]:
        monkeypatch.setattr("sys.argv", ["trustcard", "--url", api_url, "--api-key", "cli-key", *args])
        with pytest.raises(SystemExit) as exited:
            main()
        assert exited.value.code == 3
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err and err.count("\n") == 1


def test_unreachable_api_is_exit_3(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["trustcard", "--url", "http://127.0.0.1:1", "health"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 3 and "cannot reach http://127.0.0.1:1" in capsys.readouterr().err


def test_unknown_job_type_is_a_usage_error(api_url: str) -> None:
    code, _, err = run(api_url, "submit", "nothing.here")
    assert code == 2 and "unknown job type" in err
