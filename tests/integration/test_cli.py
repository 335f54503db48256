"""The installed `trustcard` command against the real stack: gunicorn, a worker, Redis."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.browser import terminal_screenshot
from tests.integration.conftest import BIN, Stack, WebProcess
from workers.stages import STAGE_NAMES

pytestmark = pytest.mark.integration


def trustcard(web: WebProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "trustcard"), "--url", web.url, *args], capture_output=True, text=True, timeout=60
    )


def test_wait_follows_the_stages_and_exits_by_outcome(
    make_stack: Callable[..., Stack], start_web: Callable[..., WebProcess]
) -> None:
    stack = make_stack(JOB_SOFT_TIMEOUT="2", JOB_TIMEOUT="4")
    stack.start_worker()
    web = start_web(stack.env)

    done = trustcard(web, "submit", "test.add", "x=7", "y=8", "--wait")
    assert (done.returncode, done.stdout.strip()) == (0, "15")

    long = trustcard(web, "--json", "submit", "test.long", "--wait")
    assert long.returncode == 1  # two seconds of soft limit: it fails at the second stage
    assert json.loads(long.stdout)["error"].startswith("Timed out")

    failed = trustcard(web, "submit", "test.sleep", "seconds=5", "--wait")
    assert failed.returncode == 1 and "Timed out" in failed.stderr


def test_wait_shows_every_stage_of_the_long_task(
    make_stack: Callable[..., Stack], start_web: Callable[..., WebProcess], tmp_path: Path
) -> None:
    stack = make_stack()
    stack.start_worker()
    web = start_web(stack.env)
    result = trustcard(web, "submit", "test.long", "--wait")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "completed", "progress": list(STAGE_NAMES), "percent": 100}
    assert all(stage in result.stderr for stage in STAGE_NAMES)
    health = trustcard(web, "--json", "health")
    assert health.returncode == 0 and json.loads(health.stdout)["workers"] == 1
    terminal_screenshot("trustcard submit test.long --wait", result.stderr + result.stdout, "cli.png", tmp_path)
