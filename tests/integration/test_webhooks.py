"""Webhooks with the Procfile's worker and a real receiver: delivered and verified, retried
after a 500, a redirect not followed, a slow receiver timed out, a private address refused.

The receiver is a threaded HTTP server in the test on a spare loopback port. Loopback is
exactly what WEBHOOK_ALLOW_PRIVATE=1 lets through, so the tests that deliver set it, and
WEBHOOK_SECRET, and say so in their names; the refusal test leaves WEBHOOK_ALLOW_PRIVATE at
its default.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.ports import free_port
from tests.support.stack import Stack, WebProcess
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration

SECRET = "whsec-integration"
WEBHOOK_ENV = {"WEBHOOK_SECRET": SECRET, "WEBHOOK_ALLOW_PRIVATE": "1"}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """Answers each POST with the next planned answer (the last one repeats): a status code,
    or "slow" (hold the answer until the test ends)."""

    plan: list[int | str]
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer_for(self, index: int) -> int | str:
        return self.plan[min(index, len(self.plan) - 1)]

    def to(self, path: str) -> list[Received]:
        return [request for request in self.requests if request.path == path]


def make_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            index = len(receiver.requests)
            receiver.requests.append(Received(self.path, dict(self.headers.items()), body, time.monotonic()))
            answer = receiver.answer_for(index)
            if answer == "slow":
                receiver.released.wait(60)
                answer = 200
            self.send_response(int(answer))
            if 300 <= int(answer) < 400:
                self.send_header("Location", receiver.url("/elsewhere"))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    servers: list[tuple[ThreadingHTTPServer, Receiver, threading.Thread]] = []

    def start(*plan: int | str) -> Receiver:
        made = Receiver(list(plan) or [200], port=free_port())
        server = ThreadingHTTPServer(("127.0.0.1", made.port), make_handler(made))
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        servers.append((server, made, thread))
        return made

    yield start
    for server, made, thread in servers:
        made.released.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def verify(header: str, body: bytes, secret: str, tolerance: int = 300) -> bool:
    """A receiver's check, with the standard library only."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    if abs(time.time() - int(fields["t"])) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


def callback_of(stack: Stack, task_id: str) -> dict[str, Any]:
    return dict(stack.task(task_id)["callback"])


def wait_for_callback(stack: Stack, task_id: str, check: Callable[[dict[str, Any]], bool], timeout: float,
                      what: str) -> dict[str, Any]:
    return wait_until(
        lambda: check(callback := callback_of(stack, task_id)) and callback,
        timeout, f"{what} (last: {callback_of(stack, task_id)})",
    )


def http(web: WebProcess, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{web.port}{path}", method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_with_webhook_secret_and_webhook_allow_private_a_webhook_is_delivered_signed_through_gunicorn(
    make_stack: Callable[..., Stack], start_web: Callable[[dict[str, str]], WebProcess],
    receiver: Callable[..., Receiver],
) -> None:
    stack = make_stack(**WEBHOOK_ENV)
    web = start_web(stack.env)
    hook = receiver(200)
    stack.start_worker()
    status, submitted = http(web, "POST", "/tasks/test/add?x=7&y=8", {"Callback-URL": hook.url()})
    assert status == 202, submitted
    assert submitted["callback"] == {"url": hook.url(), "status": "pending", "attempts": 0, "last_error": None}
    task_id = submitted["task_id"]
    [request] = wait_until(lambda: hook.requests, 30, "the webhook to arrive")
    assert request.path == "/hook"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("TrustCard-Webhook/")
    assert verify(request.headers["TrustCard-Signature"], request.body, SECRET)
    assert not verify(request.headers["TrustCard-Signature"], request.body, "not-the-secret")
    sent = json.loads(request.body)
    delivered = wait_for_callback(stack, task_id, lambda c: c["status"] == "delivered", 10, "delivered")
    assert delivered == {"url": hook.url(), "status": "delivered", "attempts": 1, "last_error": None}
    status, final = http(web, "GET", f"/tasks/{task_id}")
    assert status == 200
    assert {**sent, "callback": None} == {**final, "callback": None}  # the final view, as GET answers it
    assert sent["status"] == "completed" and sent["result"] == 15 and sent["callback"]["url"] == hook.url()


def test_with_webhook_secret_and_webhook_allow_private_a_500_is_retried_within_seconds(
    make_stack: Callable[..., Stack], receiver: Callable[..., Receiver]
) -> None:
    stack = make_stack(**WEBHOOK_ENV)
    hook = receiver(500, 200)
    stack.start_worker()
    task_id = stack.submit("/tasks/test/add?x=1&y=2", headers={"Callback-URL": hook.url()})
    retrying = wait_for_callback(stack, task_id, lambda c: c["status"] != "pending", 30, "the first attempt")
    assert retrying["status"] == "retrying" and retrying["attempts"] == 1
    assert "HTTP 500" in retrying["last_error"]
    delivered = wait_for_callback(stack, task_id, lambda c: c["status"] == "delivered", 20, "the retry")
    assert delivered == {"url": hook.url(), "status": "delivered", "attempts": 2, "last_error": None}
    first, second = hook.requests
    assert second.at - first.at < 8, second.at - first.at  # first retry 5 s later, plus the scheduler's poll
    assert verify(second.headers["TrustCard-Signature"], second.body, SECRET)


def test_with_webhook_secret_and_webhook_allow_private_every_end_is_delivered_failed_and_cancelled(
    make_stack: Callable[..., Stack], receiver: Callable[..., Receiver]
) -> None:
    stack = make_stack(**WEBHOOK_ENV)
    hook = receiver(200)
    stack.start_worker()
    failing = stack.submit("/tasks/test/fail?message=boom", headers={"Callback-URL": hook.url("/failed")})
    running = stack.submit("/tasks/test/sleep?seconds=30", headers={"Callback-URL": hook.url("/cancelled")})
    stack.wait_for(running, ("started",))
    assert stack.client.delete(f"/tasks/{running}").get_json()["status"] == "cancelled"
    for task_id, path, status in ((failing, "/failed", "failed"), (running, "/cancelled", "cancelled")):
        wait_for_callback(stack, task_id, lambda c: c["status"] == "delivered", 30, f"the {status} task's webhook")
        [request] = hook.to(path)  # the retry of test.fail is no end: one delivery
        assert json.loads(request.body)["status"] == status
        assert verify(request.headers["TrustCard-Signature"], request.body, SECRET)


def test_with_webhook_secret_and_webhook_allow_private_a_redirect_is_not_followed(
    make_stack: Callable[..., Stack], receiver: Callable[..., Receiver]
) -> None:
    stack = make_stack(**WEBHOOK_ENV)
    hook = receiver(302)
    stack.start_worker()
    task_id = stack.submit("/tasks/test/add?x=1&y=2", headers={"Callback-URL": hook.url()})
    failed = wait_for_callback(stack, task_id, lambda c: c["status"] != "pending", 30, "the first attempt")
    assert failed["status"] == "retrying" and failed["attempts"] == 1
    assert "HTTP 302" in failed["last_error"] and "redirects are not followed" in failed["last_error"]
    wait_until(lambda: len(hook.to("/hook")) == 2, 20, "the retry")  # and still not the redirect's target
    assert hook.to("/elsewhere") == []


def test_with_webhook_secret_and_webhook_allow_private_a_slow_receiver_times_out(
    make_stack: Callable[..., Stack], receiver: Callable[..., Receiver]
) -> None:
    stack = make_stack(**WEBHOOK_ENV)
    hook = receiver("slow")
    worker = stack.start_worker()
    task_id = stack.submit("/tasks/test/add?x=1&y=2", headers={"Callback-URL": hook.url()})
    [request] = wait_until(lambda: hook.requests, 30, "the webhook to arrive")
    failed = wait_for_callback(stack, task_id, lambda c: c["status"] != "pending", 20, "the attempt to time out")
    gave_up_after = time.monotonic() - request.at
    assert failed["status"] == "retrying" and failed["attempts"] == 1
    assert "did not answer in time" in failed["last_error"]
    assert 9 < gave_up_after < 14, gave_up_after  # the 10 s read timeout, not the receiver's pace
    # The worker is free again: a plain task runs meanwhile.
    other = stack.submit("/tasks/test/add?x=2&y=2")
    assert stack.wait_for(other, timeout=10)["result"] == 4
    assert worker.process.poll() is None


def test_with_webhook_secret_a_private_callback_url_is_refused_with_422_through_gunicorn(
    make_stack: Callable[..., Stack], start_web: Callable[[dict[str, str]], WebProcess],
    receiver: Callable[..., Receiver],
) -> None:
    stack = make_stack(WEBHOOK_SECRET=SECRET)  # WEBHOOK_ALLOW_PRIVATE at its default
    web = start_web(stack.env)
    hook = receiver(200)
    for url in (hook.url(), "http://localhost/hook", "http://169.254.169.254/latest/meta-data/",
                "http://[::ffff:10.0.0.1]/hook"):
        status, body = http(web, "POST", "/tasks/test/add?x=1&y=2", {"Callback-URL": url})
        assert status == 422, body
        assert body["error"] == "validation_error" and body["problems"][0]["parameter"] == "Callback-URL"
        assert "WEBHOOK_ALLOW_PRIVATE" in body["message"]
    assert stack.client.get("/health").get_json()["queues"] == {"webhooks": 0, "analysis": 0, "models": 0, "ingest": 0}
