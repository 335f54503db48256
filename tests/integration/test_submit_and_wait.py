"""`Prefer: wait=N` on a submission: the end in the same round trip, through gunicorn and a real worker."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import pytest

from tests.support.stack import Stack, WebProcess

pytestmark = pytest.mark.integration


def post(web: WebProcess, path: str, prefer: str | None) -> tuple[int, dict[str, str], dict[str, Any], float]:
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
    try:
        started = time.monotonic()
        connection.request("POST", path, headers={"Prefer": prefer} if prefer else {})
        response = connection.getresponse()
        body = json.loads(response.read())
        return response.status, dict(response.getheaders()), body, time.monotonic() - started
    finally:
        connection.close()


def cancel(web: WebProcess, task_id: str) -> None:
    """Free the shared worker for the next test (the task has shown what it had to)."""
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
    try:
        connection.request("DELETE", f"/tasks/{task_id}")
        assert connection.getresponse().status in (200, 409)  # 409: it had ended already
    finally:
        connection.close()


@pytest.fixture
def web(web_and_worker: tuple[Stack, WebProcess]) -> WebProcess:
    """The module's shared web process and worker (conftest), idle."""
    _, web = web_and_worker
    post(web, "/tasks/test/add?x=0&y=0", None)  # the first request of a process also loads what it lazily needs
    return web


def test_a_quick_task_answers_200_with_its_result_in_one_round_trip(web: WebProcess) -> None:
    status, headers, body, _ = post(web, "/tasks/test/add?x=7&y=8", "wait=10")
    assert status == 200, body
    assert (body["status"], body["result"], body["error"]) == ("completed", 15, None)
    assert headers["Preference-Applied"] == "wait=10" and headers["Location"] == f"/tasks/{body['task_id']}"
    assert "RateLimit-Remaining" in headers


def test_a_task_longer_than_the_wait_answers_202_submitted_after_the_wait(web: WebProcess) -> None:
    status, headers, body, took = post(web, "/tasks/test/sleep?seconds=5", "wait=1")
    assert status == 202 and body["status"] == "submitted", body
    assert headers["Preference-Applied"] == "wait=1"
    assert 1.0 <= took < 4, took
    cancel(web, body["task_id"])


def test_a_failed_task_answers_200_with_its_reason(web: WebProcess) -> None:
    status, _, body, _ = post(web, "/tasks/test/fail?message=boom", "wait=15")  # after its one retry, 1 s later
    assert status == 200 and body["status"] == "failed" and "boom" in body["error"], body


@pytest.mark.parametrize("prefer", [None, "respond-async", "wait=soon", "wait=0"])
def test_without_a_readable_wait_the_answer_is_the_old_202_at_once(web: WebProcess, prefer: str | None) -> None:
    status, headers, body, took = post(web, "/tasks/test/sleep?seconds=2", prefer)
    assert status == 202 and body["status"] == "submitted" and "Preference-Applied" not in headers
    assert took < 2  # before the task's own 2 s: it did not wait for the end
    cancel(web, body["task_id"])
