"""The Procfile's web line, served by gunicorn, spoken to over real HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.integration.conftest import BIN, ROOT, Stack, WebProcess, procfile_command, wait_until

pytestmark = pytest.mark.integration


def request(web: WebProcess, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], dict]:
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read() or b"null")
    finally:
        connection.close()


def test_procfile_web_serves_the_contract(make_stack: Callable[..., Stack], start_web: Callable[..., WebProcess]) -> None:
    stack = make_stack()
    stack.start_worker()
    web = start_web(stack.env)
    status, headers, body = request(web, "POST", "/tasks/test/add?x=7&y=8")
    assert status == 202 and headers["Location"] == f"/tasks/{body['task_id']}"
    done = wait_until(
        lambda: (answer := request(web, "GET", f"/tasks/{body['task_id']}")[2])["status"] == "completed" and answer,
        30,
        "add to complete over HTTP",
    )
    assert done["result"] == 15
    status, _, health = request(web, "GET", "/health")
    assert status == 200 and health["workers"] == 1 and health["database"] == "connected"


def test_oversized_body_gets_413_json_before_it_is_read(
    make_stack: Callable[..., Stack], start_web: Callable[..., WebProcess]
) -> None:
    web = start_web(make_stack().env)
    body = b'{"x": 1, "y": 2, "pad": "' + b"a" * (1024 * 1024) + b'"}'
    started = time.monotonic()
    status, _, answer = request(
        web, "POST", "/tasks/test/add", body=body, headers={"Content-Type": "application/json"}
    )
    assert status == 413 and answer["error"] == "payload_too_large"
    assert time.monotonic() - started < 5


def test_a_bad_setting_stops_the_web_with_one_sentence() -> None:
    command = procfile_command("web")
    command[0] = str(BIN / command[0])
    result = subprocess.run(
        command, cwd=ROOT, env={**os.environ, "JOB_TIMEOUT": "soon", "PORT": "0"}, capture_output=True, timeout=60
    )
    assert result.returncode != 0
    assert "configuration error: JOB_TIMEOUT must be a whole number, got 'soon'." in result.stderr.decode()


def test_sigterm_drains_the_request_in_flight_then_stops(
    make_stack: Callable[..., Stack], start_web: Callable[..., WebProcess]
) -> None:
    """A deploy's SIGTERM: the web finishes what it is answering, then stops taking requests."""
    stack = make_stack()
    worker = stack.start_worker()
    web = start_web(stack.env)
    assert request(web, "GET", "/health")[0] == 200  # gunicorn's worker is up and serving
    task_id = stack.submit("/tasks/test/sleep?seconds=30")
    stack.wait_for(task_id, ("started",))
    os.kill(worker.process.pid, signal.SIGSTOP)  # the stop command now waits: DELETE takes ~2 s
    try:
        connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=20)
        connection.request("DELETE", f"/tasks/{task_id}")
        time.sleep(0.5)  # let the request reach its view before the signal; its answer is what we check
        os.killpg(web.process.pid, signal.SIGTERM)
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["status"] == "cancelled"
        connection.close()
        web.process.wait(30)
        assert web.process.returncode == 0
        with pytest.raises(OSError):
            request(web, "GET", "/health")
    finally:
        os.kill(worker.process.pid, signal.SIGCONT)
