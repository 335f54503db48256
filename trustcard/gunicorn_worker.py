"""The web's gunicorn worker: gevent, with gunicorn's own refusals in the API's JSON shape.

Why gevent: `GET /tasks/<id>/events` and `?wait=N` hold a connection open for seconds to
minutes. gthread gives each open connection a thread of a small fixed pool (4 per process
here), so a few dozen streams would starve the ordinary API, and a thread per stream for
a thousand streams costs a stack each and a GIL fought over by a thousand threads. The
gevent worker serves each connection in a greenlet (a few KB) on one event loop, up to
`worker_connections` at once; everything the app blocks on (Redis, the event hub, HTTP)
goes through sockets that gevent patches, and the database driver is made cooperative by
psycogreen in gunicorn's `post_fork` hook (gunicorn.conf.py). The app's code stays plain
synchronous Flask: no second server, no async rewrite.

Gunicorn refuses some requests before the app sees them: a request line over
`limit_request_line` (414), too many or too large header fields (431), a malformed
request line, HTTP version or header (400). Stock gunicorn answers those with an HTML
page; clients of this API expect `{"error": code, "message": sentence}` everywhere.

The worker lets gunicorn's own `handle_error` decide the status and do its logging and
access log, writing into a recorder instead of the client's socket, then sends the same
status with a JSON body that says what was wrong. So the statuses stay gunicorn's, and
only the body changes. `JSONErrorWorker` is the same on gthread (the worker this service
used before the event streams).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

from gunicorn.http import errors
from gunicorn.util import write_nonblock
from gunicorn.workers.ggevent import GeventWorker
from gunicorn.workers.gthread import ThreadWorker

from trustcard import gunicorn_response
from trustcard.config import read_variables_or_exit
from trustcard.gevent_redis import install_quick_looks

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9+/=-]{20,200}$")
"""A router's request id is kept when it looks like one (the app applies the same rule)."""
QUOTED_LIMIT = 80
"""How much of a refused request line or header a message quotes back."""

REFUSAL_CODES: dict[int, str] = {
    400: "bad_request",
    403: "forbidden",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "request_header_fields_too_large",
    500: "internal_error",
    501: "not_implemented",
}
"""The `error` code of each status gunicorn refuses with."""
STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3}) ([^\r\n]*)\r\n")


class JSONRefusals:
    """Mixed into a gunicorn worker class: every error gunicorn answers itself is JSON."""

    cfg: Any

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        recorder = _Recorder()
        # gunicorn's status, log lines and access log, written into the recorder
        super().handle_error(req, recorder, addr, exc)  # type: ignore[misc]
        status, reason = recorder.status(exc)
        code = REFUSAL_CODES.get(status, "bad_request" if status < 500 else "internal_error")
        error = {"error": code, "message": refusal_message(exc, status, self.cfg)}
        body = json.dumps(error, separators=(",", ":")).encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"{REQUEST_ID_HEADER}: {request_id(req or getattr(exc, 'req', None))}\r\n"
            "\r\n"
        ).encode("latin-1")
        try:
            write_nonblock(client, head + body)
        except OSError as failure:  # the client went away: nothing to answer
            log.debug("could not send the refusal: %s", failure)


class KeepAliveCap:
    """Mixed into a gunicorn worker class: a keep-alive connection is closed after
    `WEB_KEEPALIVE_REQUESTS` requests, so that long-lived client connections are dealt out
    across the web processes again (`trustcard.gunicorn_response`)."""

    def init_process(self) -> None:
        cap = read_variables_or_exit("trustcard", ("WEB_KEEPALIVE_REQUESTS",))["WEB_KEEPALIVE_REQUESTS"]
        gunicorn_response.install(cap)
        super().init_process()  # type: ignore[misc]  # runs the worker: it returns when the worker stops


class JSONErrorWorker(KeepAliveCap, JSONRefusals, ThreadWorker):
    """gthread, with JSON refusals and the keep-alive cap."""


class JSONErrorGeventWorker(KeepAliveCap, JSONRefusals, GeventWorker):
    """gevent (the Procfile's web worker), with JSON refusals, the keep-alive cap, and
    redis-py's look for unread data done without gevent's cost (`trustcard.gevent_redis`)."""

    def patch(self) -> None:
        super().patch()
        install_quick_looks()


class _Recorder:
    """Stands in for the client's socket while gunicorn writes its HTML error page."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0

    def sendall(self, data: bytes) -> None:
        self.data += data

    def status(self, exc: BaseException) -> tuple[int, str]:
        """The status gunicorn chose. When it wrote nothing recognisable (its page failed
        to encode, say): 400 for a request its parser refused, else 500."""
        match = STATUS_LINE.match(self.data)
        if match is not None:
            return int(match.group(1)), match.group(2).decode("latin-1")
        if isinstance(exc, errors.ParseException):
            return 400, "Bad Request"
        return 500, "Internal Server Error"


def request_id(req: Any) -> str:
    """The request's own X-Request-Id when gunicorn parsed a valid one, else a new id."""
    for name, value in getattr(req, "headers", None) or []:
        if name.upper() == REQUEST_ID_HEADER.upper() and REQUEST_ID_PATTERN.match(value):
            return str(value)
    return uuid.uuid4().hex


def _quoted(value: Any) -> str:
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    if len(text) > QUOTED_LIMIT:
        text = text[:QUOTED_LIMIT] + "..."
    escaped = json.dumps(text)[1:-1]  # control characters and non-ASCII as escapes
    return f"'{escaped}'"


def refusal_message(exc: BaseException, status: int, cfg: Any) -> str:
    """One sentence naming what was wrong with the request."""
    if isinstance(exc, errors.LimitRequestLine):
        limit = exc.max_size or cfg.limit_request_line
        return f"The request line is longer than the limit of {limit} bytes; send long parameters in a JSON body."
    if isinstance(exc, errors.LimitRequestHeaders):
        if "size" in str(exc):
            return f"A request header field is larger than the limit of {cfg.limit_request_field_size} bytes."
        return f"The request has more header fields than the limit of {cfg.limit_request_fields}."
    if isinstance(exc, errors.InvalidRequestLine):
        return f"The request line {_quoted(exc.req)} is not 'METHOD target HTTP/1.1'."
    if isinstance(exc, errors.InvalidRequestMethod):
        return f"The request method {_quoted(exc.method)} is not valid."
    if isinstance(exc, errors.InvalidHTTPVersion):
        version = exc.version
        if isinstance(version, tuple):  # gunicorn parsed the digits: (major, minor)
            version = "HTTP/" + ".".join(str(part) for part in version)
        return f"The HTTP version {_quoted(version)} is not supported; use HTTP/1.0 or HTTP/1.1."
    if isinstance(exc, errors.ObsoleteFolding):
        return f"The request header {_quoted(exc.hdr)} is folded over several lines, which HTTP/1.1 forbids."
    if isinstance(exc, errors.InvalidHeaderName):
        return f"The request header name {_quoted(exc.hdr)} is not valid."
    if isinstance(exc, errors.InvalidHeader):
        return f"The request header {_quoted(exc.hdr)} is not valid or contradicts another header."
    if isinstance(exc, errors.UnsupportedTransferCoding):
        return f"The transfer coding {_quoted(exc.hdr)} is not supported; use chunked or a Content-Length."
    if isinstance(exc, (errors.InvalidChunkSize, errors.ChunkMissingTerminator, errors.InvalidChunkExtension)):
        return "The chunked request body is malformed."
    if isinstance(exc, errors.ExpectationFailed):
        return f"The Expect header {_quoted(exc.expect)} cannot be met; only '100-continue' is understood."
    if isinstance(exc, (errors.InvalidProxyLine, errors.ForbiddenProxyRequest, errors.InvalidSchemeHeaders)):
        return "The request's proxy or scheme information is not valid or not allowed."
    if status >= 500:
        return "The server hit an unexpected error; it has been logged."
    return "The request could not be read as HTTP/1.1."

