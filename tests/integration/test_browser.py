"""A real browser (headless Chromium) logs into /rq and opens /docs on the running stack.

The screenshots it takes are checked for content; with UPDATE_SCREENSHOTS=1 they are
also written to docs/ for the README.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.browser import chromium, screenshot
from tests.integration.conftest import Stack, WebProcess

pytestmark = pytest.mark.integration
LOGIN = ("admin", "browser-pass")


@pytest.fixture
def served(make_stack: Callable[..., Stack], start_web: Callable[..., WebProcess]) -> tuple[Stack, WebProcess]:
    stack = make_stack(DASHBOARD_PASSWORD=LOGIN[1])
    stack.start_worker()
    return stack, start_web(stack.env)


def test_dashboard_shows_the_queue_and_a_finished_job(served: tuple[Stack, WebProcess], tmp_path: Path) -> None:
    stack, web = served
    task_id = stack.submit("/tasks/test/add?x=7&y=8")
    assert stack.wait_for(task_id)["status"] == "completed"
    base = f"http://{LOGIN[0]}:{LOGIN[1]}@127.0.0.1:{web.port}/rq/0/view"

    queues = chromium(f"http://{LOGIN[0]}:{LOGIN[1]}@127.0.0.1:{web.port}/rq/", "--dump-dom")
    assert "analysis" in queues
    finished = chromium(f"{base}/jobs/analysis/finished/8/asc/1", "--dump-dom")
    assert task_id in finished and "workers.test_jobs.add(x=7, y=8)" in finished
    screenshot(f"{base}/jobs/analysis/finished/8/asc/1", "dashboard.png", tmp_path)

    refused = chromium(f"http://127.0.0.1:{web.port}/rq/", "--dump-dom")
    assert "analysis" not in refused and "RQ-dashboard" not in refused  # no login, nothing shown


def test_docs_page_renders_the_api(served: tuple[Stack, WebProcess], tmp_path: Path) -> None:
    _, web = served
    page = chromium(f"http://127.0.0.1:{web.port}/docs", "--dump-dom")
    assert "/tasks/test/add" in page and "/health" in page
    screenshot(f"http://127.0.0.1:{web.port}/docs", "docs.png", tmp_path)
