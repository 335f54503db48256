"""The installed `trustcard` script against the real stack: gunicorn, an `rq worker`, Redis.

The web and the worker are started from the Procfile's own lines (see conftest), on a
private Redis server, and the CLI runs as a subprocess of the virtualenv's `trustcard`
script, so this is what a person at a terminal gets after `pip install`.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import terminal_screenshot
from tests.support.paths import BIN
from tests.support.redis_server import PrivateRedis
from tests.support.stack import Stack, WebProcess
from tests.support.waiting import wait_until
from workers.stages import STAGE_NAMES

pytestmark = pytest.mark.integration

LONG_RESULT = {"status": "completed", "progress": list(STAGE_NAMES), "percent": 100}
"""The long task's result, from the HTTP contract."""

STAGE_LINES = [f"[{20 * index:3d}%] {stage}" for index, stage in enumerate(STAGE_NAMES)] + ["[100%] Done"]
"""What `--wait` prints on a stderr that is not a terminal, one line per stage."""


def cli_env(**extra: str) -> dict[str, str]:
    """The test's environment without any TRUSTCARD_URL or API_KEY of the person running it."""
    env = {key: value for key, value in os.environ.items() if key not in ("TRUSTCARD_URL", "API_KEY")}
    return {**env, **extra}


def trustcard(web: WebProcess, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "trustcard"), "--url", web.url, *args],
        capture_output=True, text=True, timeout=90, env=cli_env(**env),
    )


def trustcard_json(web: WebProcess, *args: str) -> Any:
    result = trustcard(web, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def started(
    make_stack: Callable[..., Stack], start_web: Callable[..., WebProcess], private_redis: PrivateRedis
) -> Callable[..., tuple[Stack, WebProcess]]:
    """A stack on a private Redis with one worker and gunicorn; env overrides settings."""

    def start(**env: str) -> tuple[Stack, WebProcess]:
        stack = make_stack(redis_url=private_redis.url, **env)
        stack.start_worker()
        return stack, start_web(stack.env)

    return start


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    """CLI processes a test runs in the background; killed at the end if still running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_the_outcome_decides_the_exit_status(started: Callable[..., tuple[Stack, WebProcess]]) -> None:
    _, web = started(JOB_SOFT_TIMEOUT="1", JOB_TIMEOUT="3", API_KEY="cli-it-key")

    done = trustcard(web, "submit", "test.add", "x=7", "y=8", "--wait", API_KEY="cli-it-key")
    assert (done.returncode, done.stdout) == (0, "15\n"), done.stderr
    assert "(test.add)" in done.stderr and done.stderr.rstrip().endswith("[100%] completed")

    failed = trustcard(web, "submit", "test.sleep", "seconds=5", "--wait", API_KEY="cli-it-key")
    assert failed.returncode == 1 and failed.stdout == ""
    assert re.search(r"task \S+ failed: Timed out", failed.stderr), failed.stderr

    as_json = trustcard(web, "--json", "submit", "test.sleep", "seconds=5", "--wait", API_KEY="cli-it-key")
    answer = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and as_json.stderr == ""
    assert (answer["name"], answer["status"]) == ("test.sleep", "failed") and answer["error"].startswith("Timed out")

    no_key = trustcard(web, "running")
    assert no_key.returncode == 3 and "HTTP 401, set --api-key or API_KEY" in no_key.stderr


def test_wait_in_a_pipe_prints_each_stage_and_the_exact_result(
    started: Callable[..., tuple[Stack, WebProcess]], tmp_path: Path
) -> None:
    _, web = started()
    result = trustcard(web, "submit", "test.long", "--wait")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == LONG_RESULT
    progress_lines = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert [line for line in progress_lines if line not in ("[  0%] waiting", "[  0%] running")] == STAGE_LINES
    terminal_screenshot("trustcard submit test.long --wait", result.stderr + result.stdout, "cli.png", tmp_path)
    # It followed the task on its event stream, not by polling: one stream, no status reads.
    access = [line for line in web.log().splitlines() if '"GET /tasks/' in line]
    assert sum("/events HTTP" in line for line in access) == 1, access
    assert not [line for line in access if "/events" not in line], access


def test_wait_on_a_terminal_draws_a_live_bar_while_running_lists_the_task(
    started: Callable[..., tuple[Stack, WebProcess]], processes: list[subprocess.Popen[str]]
) -> None:
    _, web = started()
    terminal, terminal_side = pty.openpty()
    waiting = subprocess.Popen(
        [str(BIN / "trustcard"), "--url", web.url, "submit", "test.long", "--wait"],
        stdout=subprocess.PIPE, stderr=terminal_side, text=True, env=cli_env(),
    )
    processes.append(waiting)
    os.close(terminal_side)
    drawn = bytearray()
    reader = threading.Thread(target=_read_all, args=(terminal, drawn), daemon=True)
    reader.start()

    listed = wait_until(
        lambda: (answer := trustcard_json(web, "running"))["count"] == 1
        and answer["tasks"][0]["progress"] is not None and answer,
        30, "the long task to be listed as running with progress",
    )
    task = listed["tasks"][0]
    assert task["name"] == "test.long" and task["worker"] and task["progress"]["stage"] in STAGE_NAMES
    table = trustcard(web, "running")
    assert table.returncode == 0 and task["task_id"] in table.stdout and table.stdout.endswith("1 running\n")
    health = trustcard_json(web, "health")
    assert (health["status"], health["workers"], health["queues"]) == ("healthy", 1, {"webhooks": 0, "analysis": 0, "models": 0, "ingest": 0})

    stdout, _ = waiting.communicate(timeout=60)
    reader.join(10)
    assert waiting.returncode == 0 and json.loads(stdout) == LONG_RESULT
    frames = [frame.strip() for frame in re.sub(r"\x1b\[\?25[lh]", "", drawn.decode()).split("\r") if frame.strip()]
    for index, stage in enumerate(STAGE_NAMES):
        assert any(frame.startswith("running") and frame.endswith(f"{20 * index}%  {stage}") for frame in frames), (
            stage, frames)
    assert frames[-1].startswith("completed  [##############################]  100%  Done")


def _read_all(fd: int, into: bytearray) -> None:
    """Everything written to the terminal until the process closes it."""
    try:
        while chunk := os.read(fd, 4096):
            into.extend(chunk)
    except OSError:  # EIO: the other side is closed
        pass
    finally:
        os.close(fd)


def test_cancel_ends_a_wait_with_exit_2(
    started: Callable[..., tuple[Stack, WebProcess]], processes: list[subprocess.Popen[str]]
) -> None:
    stack, web = started()
    task_id = trustcard_json(web, "submit", "test.long")["task_id"]
    waiting = subprocess.Popen(
        [str(BIN / "trustcard"), "--url", web.url, "status", task_id, "--wait"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )
    processes.append(waiting)
    stack.wait_for(task_id, ("started",))

    cancelled = trustcard(web, "cancel", task_id)
    assert cancelled.returncode == 0 and cancelled.stdout.splitlines()[1].split() == ["status:", "cancelled"]
    stdout, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == 2 and stdout == ""
    assert f"task {task_id} cancelled: Cancelled on request." in stderr
    again = trustcard(web, "cancel", task_id)
    assert again.returncode == 3 and "task_already_ended, HTTP 409" in again.stderr
