"""A real browser (headless Chromium) logs into /rq and opens /docs on gunicorn with a real worker.

The screenshots it takes are decoded and checked for content; with UPDATE_SCREENSHOTS=1
they are also written to docs/ for the README.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import chromium, decode_png, screenshot
from tests.support.stack import Stack, WebProcess
from tests.support.waiting import wait_until
from tests.support.stack import DASHBOARD_LOGIN as LOGIN

pytestmark = pytest.mark.integration
HTTP_TIMEOUT_SECONDS = 10
SWAGGER_POST_GREEN = (73, 204, 144)
"""The fill of Swagger UI's POST operation bars."""


def is_bootstrap_blue(pixel: tuple[int, int, int]) -> bool:
    """The dashboard's accent (Bootstrap's primary blue: the current page, the autorefresh switch)."""
    red, green, blue = pixel
    return red < 60 and 90 < green < 160 and blue > 200


def call(web: WebProcess, method: str, path: str) -> dict[str, Any]:
    """One request to the real web process, as a client would make it."""
    request = urllib.request.Request(web.url + path, method=method)
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
        return dict(json.load(response))


def logged_in(web: WebProcess, path: str) -> str:
    return f"http://{LOGIN[0]}:{LOGIN[1]}@127.0.0.1:{web.port}{path}"


@pytest.fixture
def served(
    dashboard_stack: Callable[..., Stack],  # noqa: F811
    start_web: Callable[[dict[str, str]], WebProcess],
) -> tuple[Stack, WebProcess]:
    """gunicorn from the Procfile's web line, and a worker from its worker line, on one Redis."""
    stack = dashboard_stack()
    stack.start_worker()
    return stack, start_web(stack.env)


def test_dashboard_shows_the_queue_and_a_finished_job(served: tuple[Stack, WebProcess], tmp_path: Path) -> None:
    _, web = served
    task_id = call(web, "POST", "/tasks/test/add?x=7&y=8")["task_id"]
    wait_until(lambda: call(web, "GET", f"/tasks/{task_id}")["status"] == "completed", 30, f"task {task_id}")
    finished_jobs = "/rq/0/view/jobs/analysis/finished/8/asc/1"

    queues = chromium(logged_in(web, "/rq/0/view/queues"), "--dump-dom")
    assert finished_jobs in queues  # the row of the analysis queue, drawn by the page's script from queues.json
    jobs = chromium(logged_in(web, finished_jobs), "--dump-dom")
    assert task_id in jobs and "workers.diagnostics.add(x=7, y=8)" in jobs

    shot = decode_png(screenshot(logged_in(web, finished_jobs), "dashboard.png", tmp_path))
    assert sum(map(is_bootstrap_blue, shot.pixels())) > 100, "the screenshot does not show the dashboard"

    refused = chromium(f"{web.url}/rq/0/view/queues", "--dump-dom")  # no login: Chromium shows nothing
    assert "RQ-dashboard" not in refused and "analysis" not in refused
    plain = tmp_path / "plain.png"  # a JSON answer, as Chromium draws it: black text on white, no blue
    chromium(f"{web.url}/no-such-page", f"--screenshot={plain}")
    assert not any(map(is_bootstrap_blue, decode_png(plain).pixels()))


def test_docs_page_renders_the_api(
    dashboard_stack: Callable[..., Stack],  # noqa: F811
    start_web: Callable[[dict[str, str]], WebProcess],
    tmp_path: Path,
) -> None:
    web = start_web(dashboard_stack().env)
    page = chromium(f"{web.url}/docs", "--dump-dom")
    assert "/tasks/test/add" in page and "/health" in page  # drawn by Swagger UI from /openapi.json
    shot = decode_png(screenshot(f"{web.url}/docs", "docs.png", tmp_path))
    assert sum(pixel == SWAGGER_POST_GREEN for pixel in shot.pixels()) > 1000, "the screenshot shows no operations"
