"""The web's gunicorn worker answers gunicorn's own refusals as the API's JSON errors.

These call the worker's `handle_error` with the exceptions gunicorn's parser raises,
so the statuses are the installed gunicorn's own; tests/integration/test_web_process.py
sends the same refusals to a real gunicorn over a socket.
"""

from __future__ import annotations

import json
import os
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.http import errors
from gunicorn.http.parser import RequestParser

from trustcard.gunicorn_worker import JSONErrorGeventWorker, JSONErrorWorker

ROOT = Path(__file__).resolve().parents[2]


class FakeSocket:
    def __init__(self) -> None:
        self.data = b""
        self.timeout: float | None = None

    def gettimeout(self) -> float | None:
        return self.timeout

    def setblocking(self, flag: bool) -> None:
        self.timeout = None if flag else 0.0

    def sendall(self, data: bytes) -> None:
        self.data += data


@pytest.fixture
def worker() -> Iterator[JSONErrorWorker]:
    cfg = Config()
    cfg.set("accesslog", None)
    worker = JSONErrorWorker(0, os.getpid(), [], None, 30, cfg, Logger(cfg))
    yield worker
    worker.tmp.close()  # the heartbeat file every gunicorn worker opens


def parsed(worker: JSONErrorWorker, raw: str) -> Any:
    """A request as gunicorn's own parser reads it from the wire."""
    return next(RequestParser(worker.cfg, iter([raw.encode("latin-1")]), ("127.0.0.1", 50000)))


def answer(worker: JSONErrorWorker, exc: BaseException, req: Any = None) -> tuple[int, dict[str, str], Any]:
    sock = FakeSocket()
    worker.handle_error(req, sock, ("127.0.0.1", 50000), exc)
    head, _, body = sock.data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    assert int(headers["Content-Length"]) == len(body)
    return int(status_line.split()[1]), headers, json.loads(body)


REFUSALS = [
    (errors.LimitRequestLine(5014, 4094), 414, "uri_too_long", "longer than the limit of 4094 bytes"),
    (errors.LimitRequestHeaders("limit request headers fields"), 431, "request_header_fields_too_large",
     "more header fields than the limit of 100"),
    (errors.LimitRequestHeaders("limit request headers fields size"), 431, "request_header_fields_too_large",
     "larger than the limit of 8190 bytes"),
    (errors.InvalidRequestLine("GARBAGE"), 400, "bad_request", "'GARBAGE' is not 'METHOD target HTTP/1.1'"),
    (errors.InvalidRequestMethod("GÉT"), 400, "bad_request", "method 'G\\u00c9T' is not valid"),
    (errors.InvalidHTTPVersion((9, 9)), 400, "bad_request", "HTTP version 'HTTP/9.9' is not supported"),
    (errors.InvalidHeaderName("Bad Header"), 400, "bad_request", "header name 'Bad Header' is not valid"),
    (errors.InvalidHeader("CONTENT-LENGTH"), 400, "bad_request", "header 'CONTENT-LENGTH' is not valid"),
    (errors.ObsoleteFolding("X-Folded"), 400, "bad_request", "'X-Folded' is folded"),
    (errors.InvalidChunkSize(b"zz"), 400, "bad_request", "chunked request body is malformed"),
    (errors.UnsupportedTransferCoding("gzip"), 501, "not_implemented", "transfer coding 'gzip'"),
    (errors.ExpectationFailed("200-ok"), 417, "expectation_failed", "Expect header '200-ok'"),
    (RuntimeError("boom"), 500, "internal_error", "unexpected error"),
]


@pytest.mark.parametrize(("exc", "status", "code", "phrase"), REFUSALS, ids=[type(r[0]).__name__ for r in REFUSALS])
def test_each_refusal_is_json_with_gunicorns_status(
    worker: JSONErrorWorker, exc: BaseException, status: int, code: str, phrase: str
) -> None:
    got_status, headers, body = answer(worker, exc)
    assert got_status == status
    assert headers["Content-Type"] == "application/json" and headers["Connection"] == "close"
    assert set(body) == {"error", "message"} and body["error"] == code
    assert phrase in body["message"] and body["message"].endswith(".")
    assert "<" not in body["message"]  # no HTML, no traceback


def test_a_long_refused_value_is_quoted_only_in_part(worker: JSONErrorWorker) -> None:
    _, _, body = answer(worker, errors.InvalidRequestLine("x" * 5000))
    assert len(body["message"]) < 200 and "x" * 80 + "..." in body["message"]


def test_the_requests_own_valid_request_id_is_echoed_else_one_is_made(worker: JSONErrorWorker) -> None:
    own = "router-id-0123456789abcdef"
    req = parsed(worker, f"GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: {own}\r\n\r\n")
    assert answer(worker, errors.InvalidHeader("X-ODD"), req)[1]["X-Request-Id"] == own
    bad = parsed(worker, "GET /health HTTP/1.1\r\nHost: x\r\nX-Request-Id: short\r\n\r\n")
    made = answer(worker, errors.InvalidHeader("X-ODD"), bad)[1]["X-Request-Id"]
    assert made != "short" and 20 <= len(made) <= 200
    assert answer(worker, errors.InvalidRequestLine("GARBAGE"))[1]["X-Request-Id"] != made


def test_gunicorn_conf_uses_the_gevent_worker_and_keeps_timeouts() -> None:
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert config["worker_class"] == "trustcard.gunicorn_worker.JSONErrorGeventWorker"
    assert config["worker_connections"] == 4000  # open event streams and long polls, per process
    assert (config["timeout"], config["graceful_timeout"], config["keepalive"]) == (30, 25, 5)
    assert callable(config["post_fork"])  # makes psycopg2 cooperative under gevent


def test_the_gevent_worker_answers_refusals_as_json_too() -> None:
    cfg = Config()
    cfg.set("accesslog", None)
    gevent_worker = JSONErrorGeventWorker(0, os.getpid(), [], None, 30, cfg, Logger(cfg))
    try:
        status, headers, body = answer(gevent_worker, errors.LimitRequestLine(9000, 4094))
    finally:
        gevent_worker.tmp.close()
    assert status == 414 and headers["Content-Type"] == "application/json"
    assert body["error"] == "uri_too_long" and "4094" in body["message"]


def test_a_refusal_gunicorn_fails_to_write_is_still_json(worker: JSONErrorWorker) -> None:
    """gunicorn encodes its HTML page as Latin-1; a method it cannot encode leaves it
    with nothing written, and the worker still answers 400 in JSON."""
    status, headers, body = answer(worker, errors.InvalidRequestMethod("G€T"))
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert body["error"] == "bad_request" and "G\\u20acT" in body["message"]
