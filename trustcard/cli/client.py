"""A small JSON client of the HTTP API, on the standard library.

The CLI talks to the API over HTTP like any other client (it never opens Redis), so it
works against any deployment. The standard library's `urllib` is enough for a handful
of JSON calls, and it keeps the command free of another pinned dependency.

Errors come back as `ApiError` with the API's own code and message, or as
`ConnectionFailed` when nothing answers.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10
"""How long one request may take before the API counts as unreachable."""

STREAM_TIMEOUT_SECONDS = 60
"""Longest silence on an event stream before it counts as broken: the server sends a comment
heartbeat every 15 s by default (at most 50)."""

EVENT_STREAM = "text/event-stream"

USER_AGENT = "trustcard-cli"


class ConnectionFailed(Exception):
    """Nothing answered at the API's address (refused, unknown host, timed out)."""


class ApiError(Exception):
    """The API answered with an error: its HTTP status, its `error` code and its `message`."""

    def __init__(self, status: int, code: str, message: str, body: Any = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        self.retry_after = retry_after
        """The answer's Retry-After, in seconds, when it sent one (429, 503)."""

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})"


class NoEventStream(Exception):
    """The server does not stream this task's or analysis's events (an older server): poll instead."""


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event: its name (`message` when unnamed), id and JSON data."""

    name: str
    id: str | None
    data: Any


class ApiClient:
    """One method per endpoint of the HTTP contract; each returns the decoded JSON answer."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = TIMEOUT_SECONDS) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or None
        self.timeout = timeout

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, extra_headers: dict[str, str] | None = None
    ) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **(extra_headers or {})}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = self.base_url + path
        log.debug("%s %s", method, url)
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return _decode(response.status, response.read())
        except urllib.error.HTTPError as error:
            raise _api_error(error) from None
        except ValueError as error:  # a URL urllib cannot use, e.g. without http://
            raise ConnectionFailed(f"cannot use {self.base_url!r} as the API's address: {error}") from None
        except OSError as error:  # URLError, refused, reset, timeout
            reason = getattr(error, "reason", None) or error
            raise ConnectionFailed(f"cannot reach {self.base_url}: {reason}") from None

    def events(self, task_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """The task's event stream (`GET /tasks/<id>/events`), from after `last_event_id`."""
        return self._event_stream(f"/tasks/{_segment(task_id)}/events", f"task {task_id}", last_event_id)

    def analysis_events(self, analysis_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """The analysis's event stream (`GET /analyses/<id>/events`), from after `last_event_id`."""
        return self._event_stream(f"/analyses/{_segment(analysis_id)}/events", f"analysis {analysis_id}",
                                  last_event_id)

    def _event_stream(self, path: str, what: str, last_event_id: str | None) -> Iterator[Event]:
        """The events at `path` (about `what`, for messages), from after `last_event_id`.

        `NoEventStream` when the server answers anything but an event stream (404, 405, 406,
        501, JSON): the caller falls back to polling. Comments (heartbeats) are skipped.
        """
        headers = {"Accept": EVENT_STREAM, "User-Agent": USER_AGENT, "Cache-Control": "no-cache"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        request = urllib.request.Request(self.base_url + path, method="GET", headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=STREAM_TIMEOUT_SECONDS)
        except urllib.error.HTTPError as error:
            if error.code in (404, 405, 406, 501):
                raise NoEventStream(f"no event stream for {what} (HTTP {error.code})") from None
            raise _api_error(error) from None
        except ValueError as error:
            raise ConnectionFailed(f"cannot use {self.base_url!r} as the API's address: {error}") from None
        except OSError as error:
            raise ConnectionFailed(f"cannot reach {self.base_url}: {getattr(error, 'reason', None) or error}") from None
        with response:
            if not response.headers.get("Content-Type", "").startswith(EVENT_STREAM):
                raise NoEventStream(f"the server answered {response.headers.get('Content-Type')}, not events")
            try:
                yield from parse_event_stream(response)
            except OSError as error:  # reset, or silent past the heartbeat: the caller reconnects
                raise ConnectionFailed(f"the event stream of {what} broke: {error}") from None

    def submit(self, job_name: str, params: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", "/tasks/" + job_name.replace(".", "/"), params))

    def submit_batch(self, tasks: list[dict[str, Any]], idempotency_key: str | None = None) -> dict[str, Any]:
        """`POST /tasks/batch`; the key makes sending the same batch again harmless."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return dict(self.request("POST", "/tasks/batch", {"tasks": tasks}, headers))

    def task(self, task_id: str) -> dict[str, Any]:
        return dict(self.request("GET", "/tasks/" + _segment(task_id)))

    def cancel(self, task_id: str) -> dict[str, Any]:
        return dict(self.request("DELETE", "/tasks/" + _segment(task_id)))

    def running(self) -> dict[str, Any]:
        return dict(self.request("GET", "/tasks/"))

    def submit_analysis(self, url: str) -> dict[str, Any]:
        return dict(self.request("POST", "/analyses", {"url": url}))

    def analysis(self, analysis_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/analyses/{_segment(analysis_id)}"))

    def health(self) -> dict[str, Any]:
        """The health report, also when it is a 503 naming the failing part."""
        try:
            return dict(self.request("GET", "/health"))
        except ApiError as error:
            if error.status == 503 and isinstance(error.body, dict) and "status" in error.body:
                return dict(error.body)
            raise


def parse_event_stream(lines: Iterable[bytes]) -> Iterator[Event]:
    """Server-Sent Events from the stream's lines (the W3C format: fields, blank line ends an event)."""
    name, event_id, data = "message", None, []
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                try:
                    payload: Any = json.loads("\n".join(data))
                except ValueError:
                    payload = "\n".join(data)
                yield Event(name, event_id, payload)
            name, data = "message", []
            continue
        if line.startswith(":"):
            continue  # a comment: the heartbeat
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value


def _segment(task_id: str) -> str:
    return urllib.parse.quote(task_id, safe="")


def _decode(status: int, raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        raise ApiError(status, "not_json", "the server's answer is not JSON; is --url the TrustCard API?") from None


def _api_error(error: urllib.error.HTTPError) -> ApiError:
    try:
        body = json.loads(error.read() or b"null")
    except (ValueError, OSError):
        body = None
    retry_after = error.headers.get("Retry-After") if error.headers is not None else None
    seconds = int(retry_after) if retry_after is not None and retry_after.strip().isdigit() else None
    if isinstance(body, dict) and "error" in body:
        return ApiError(error.code, str(body["error"]), str(body.get("message") or error.reason), body, seconds)
    return ApiError(error.code, "http_error", str(error.reason or "error"), body, seconds)
