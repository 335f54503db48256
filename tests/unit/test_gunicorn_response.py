"""The keep-alive cap: a connection's Nth answer says `Connection: close`, earlier ones keep
the connection open, and gunicorn's own `wsgi.create` builds the capped response.

Requests come from gunicorn's own parser reading several requests off one connection, so
their numbers are the ones a real worker sees; tests/integration/test_web_process.py checks
the default cap against the Procfile's web over a socket.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from trustcard import gunicorn_response
from trustcard.config.loading import read_variable


class FakeSocket:
    def __init__(self) -> None:
        self.data = b""

    def sendall(self, data: bytes) -> None:
        self.data += data


@pytest.fixture(autouse=True)
def stock_response_afterwards() -> Iterator[None]:
    stock = wsgi.Response
    yield
    wsgi.Response = stock  # type: ignore[misc]
    gunicorn_response.KeepAliveCappedResponse.requests_per_connection = 0


def requests_on_one_connection(count: int) -> list[Any]:
    raw = b"".join(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" for _ in range(count))
    return list(RequestParser(Config(), iter([raw]), ("127.0.0.1", 50000)))


def answered(req: Any) -> tuple[str, bool]:
    """The Connection header gunicorn sent, and whether it then closes the connection."""
    sock = FakeSocket()
    response, _ = wsgi.create(req, sock, ("127.0.0.1", 50000), ("127.0.0.1", 8000), Config())
    response.start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
    response.write(b"{}")
    response.close()
    headers = dict(line.split(": ", 1) for line in sock.data.split(b"\r\n\r\n")[0].decode().split("\r\n")[1:])
    return headers["Connection"], response.should_close()


def test_the_capped_response_is_what_gunicorns_wsgi_create_builds_once_installed() -> None:
    gunicorn_response.install(3)
    req = requests_on_one_connection(1)[0]
    response, _ = wsgi.create(req, FakeSocket(), ("127.0.0.1", 50000), ("127.0.0.1", 8000), Config())
    assert isinstance(response, gunicorn_response.KeepAliveCappedResponse)


def test_a_connection_is_kept_open_until_its_capth_answer_which_closes_it() -> None:
    gunicorn_response.install(3)
    answers = [answered(req) for req in requests_on_one_connection(4)]
    assert answers[:2] == [("keep-alive", False), ("keep-alive", False)]
    assert answers[2] == ("close", True)


def test_with_web_keepalive_requests_0_no_connection_is_ever_closed_for_its_count() -> None:
    gunicorn_response.install(read_variable({"WEB_KEEPALIVE_REQUESTS": "0"}, "WEB_KEEPALIVE_REQUESTS"))
    assert {answered(req) for req in requests_on_one_connection(250)} == {("keep-alive", False)}


def test_the_cap_adds_to_gunicorns_own_reasons_to_close() -> None:
    gunicorn_response.install(100)
    (req,) = list(RequestParser(Config(), iter([b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"]), ("127.0.0.1", 1)))
    assert answered(req) == ("close", True)  # the client's own Connection: close, on request 1


def test_the_default_cap_is_100_requests() -> None:
    assert read_variable({}, "WEB_KEEPALIVE_REQUESTS") == 100
