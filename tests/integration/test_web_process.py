"""The Procfile's web line, served by gunicorn, spoken to over real HTTP."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.support.paths import ROOT
from tests.support.procfile import procfile_command
from tests.support.stack import Stack, WebProcess
from tests.support.waiting import wait_until
from trustcard.status import CANCEL_FIELD

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
        # The request has reached its view once the view marked the job (it then waits on the
        # stopped worker): only then is it "in flight" for the signal; its answer is what we check.
        connection_to_redis = stack.app.extensions["trustcard.redis"]
        wait_until(lambda: connection_to_redis.hexists(f"rq:job:{task_id}", CANCEL_FIELD), 10,
                   "the DELETE to reach its view", interval=0.01)
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


def test_at_the_default_cap_a_keep_alive_connection_closes_after_its_100th_answer(
    make_stack: Callable[..., Stack], start_web: Callable[..., WebProcess]
) -> None:
    """WEB_KEEPALIVE_REQUESTS at its default: requests 1-99 on one connection are answered
    with the connection kept open, the 100th is answered in full with `Connection: close`,
    and then gunicorn closes the connection; a new one is served as usual."""
    web = start_web(make_stack().env)
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        answers = []
        for _ in range(100):
            sock.sendall(b"GET /tasks/nothing-here HTTP/1.1\r\nHost: t\r\n\r\n")
            status = int(reader.readline().split()[1])
            headers = {}
            while (line := reader.readline()) != b"\r\n":
                name, _, value = line.decode("latin-1").rstrip("\r\n").partition(": ")
                headers[name.lower()] = value
            body = json.loads(reader.read(int(headers["content-length"])))
            answers.append((status, headers["connection"], body["error"]))
        assert answers[:99] == [(404, "keep-alive", "task_not_found")] * 99
        assert answers[99] == (404, "close", "task_not_found")
        assert reader.read() == b""  # closed by the server after the 100th answer
    assert request(web, "GET", "/tasks/nothing-here")[0] == 404


def raw_exchange(web: WebProcess, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (http.client would refuse to build most of these) and read
    the answer until gunicorn closes the connection."""
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
    return int(status_line.split()[1]), headers, body


GUNICORN_REFUSALS = {
    "request line over 4094 bytes": (b"GET /tasks/" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414,
                                     "uri_too_long", "4094 bytes"),
    "too many header fields": (b"GET /health HTTP/1.1\r\nHost: t\r\n"
                               + b"".join(b"X-Field-%d: v\r\n" % n for n in range(120)) + b"\r\n", 431,
                               "request_header_fields_too_large", "more header fields than the limit of 100"),
    "a header field too large": (b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431,
                                 "request_header_fields_too_large", "8190 bytes"),
    "malformed request line": (b"HELLO\r\n\r\n", 400, "bad_request", "'HELLO' is not 'METHOD target HTTP/1.1'"),
    "bad HTTP version": (b"GET /health HTTP/7.3\r\nHost: t\r\n\r\n", 400, "bad_request", "'HTTP/7.3'"),
    "invalid header name": (b"GET /health HTTP/1.1\r\nHost: t\r\nBad Name: v\r\n\r\n", 400, "bad_request",
                            "header name 'Bad Name'"),
    "contradicting lengths": (b"POST /tasks/test/add HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
                              b"Content-Length: 2\r\n\r\nxx", 400, "bad_request", "'CONTENT-LENGTH'"),
}


def test_gunicorns_own_refusals_are_json_errors(
    make_stack: Callable[..., Stack], start_web: Callable[..., WebProcess]
) -> None:
    """Requests gunicorn refuses before the app sees them get the API's error shape, each
    with its own status and a message naming what was wrong; the web serves on after them."""
    web = start_web(make_stack().env)
    for kind, (data, status, code, phrase) in GUNICORN_REFUSALS.items():
        got_status, headers, body = raw_exchange(web, data)
        assert got_status == status, kind
        assert headers["content-type"] == "application/json", kind
        answer = json.loads(body)
        assert set(answer) == {"error", "message"} and answer["error"] == code, (kind, answer)
        assert phrase in answer["message"], (kind, answer)
        assert 20 <= len(headers["x-request-id"]) <= 200, kind
    assert request(web, "GET", "/health")[0] == 200


REQUEST_ID = "platform-request-0123456789"


def _submit_with_request_id(web: WebProcess) -> str:
    status, headers, body = request(web, "POST", "/tasks/test/add?x=1&y=2", headers={"X-Request-Id": REQUEST_ID})
    assert status == 202 and headers["X-Request-Id"] == REQUEST_ID
    return str(body["task_id"])


def test_web_log_lines_name_the_request_id_at_the_default_text_format(
    make_stack: Callable[..., Stack], start_web: Callable[..., WebProcess]
) -> None:
    web = start_web(make_stack().env)
    task_id = _submit_with_request_id(web)
    lines = wait_until(
        lambda: [line for line in web.log().splitlines() if REQUEST_ID in line and ("POST" in line or task_id in line)]
        if len([line for line in web.log().splitlines() if REQUEST_ID in line]) >= 2 else None,
        10,
        "the app's and gunicorn's lines for the request",
    )
    app_line = next(line for line in lines if f"task {task_id} received" in line)
    assert f"task_id={task_id} request_id={REQUEST_ID} client=127.0.0.1" in app_line
    access_line = next(line for line in lines if '"POST /tasks/test/add' in line)
    assert f"request_id={REQUEST_ID}" in access_line and " 202 " in access_line


def _written_lines(web: WebProcess) -> list[str]:
    """The log's complete lines: a line still being written (no newline yet) is left for the
    next read, as two processes write into the one file while the test reads it."""
    text = web.log()
    return text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]


def test_log_format_json_setting_makes_every_web_line_a_json_object(
    make_stack: Callable[..., Stack], start_web: Callable[..., WebProcess]
) -> None:
    web = start_web({**make_stack().env, "LOG_FORMAT": "json"})
    task_id = _submit_with_request_id(web)
    entries = wait_until(
        lambda: (found := [json.loads(line) for line in _written_lines(web) if REQUEST_ID in line])
        and len(found) >= 2 and found,
        10,
        "the app's and gunicorn's JSON lines for the request",
    )
    for line in _written_lines(web):  # every line, gunicorn's start-up lines included
        try:
            json.loads(line)
        except ValueError:
            pytest.fail(f"a web log line that is not a JSON object: {line!r}")
    app_entry = next(entry for entry in entries if entry["message"] == f"task {task_id} received: test.add {{'x': 1, 'y': 2}}")
    assert (app_entry["task_id"], app_entry["request_id"], app_entry["client"]) == (task_id, REQUEST_ID, "127.0.0.1")
    assert app_entry["level"] == "INFO" and app_entry["logger"] == "trustcard.task_service"
    access_entry = next(entry for entry in entries if entry["logger"] == "gunicorn.access")
    assert '"POST /tasks/test/add?x=1&y=2 HTTP/1.1" 202' in access_entry["message"]
