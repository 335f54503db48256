"""A small JSON client of the HTTP API, on the standard library.

The CLI talks to the API over HTTP like any other client (it never opens Redis), so
it works against any deployment. Errors come back as `ApiError` with the API's own
code and message, or as `ConnectionFailed` when nothing answers.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

TIMEOUT_SECONDS = 10


class ConnectionFailed(Exception):
    """The API did not answer at all."""


@dataclass
class ApiError(Exception):
    """The API answered with an error: its HTTP status, code and message."""

    status: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.message} ({self.code}, HTTP {self.status})"


class ApiClient:
    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise _api_error(error) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ConnectionFailed(f"cannot reach {self.base_url}: {reason}") from None

    def submit(self, job_name: str, params: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", "/tasks/" + job_name.replace(".", "/"), params))

    def task(self, task_id: str) -> dict[str, Any]:
        return dict(self.request("GET", "/tasks/" + urllib.parse.quote(task_id, safe="")))

    def cancel(self, task_id: str) -> dict[str, Any]:
        return dict(self.request("DELETE", "/tasks/" + urllib.parse.quote(task_id, safe="")))

    def running(self) -> dict[str, Any]:
        return dict(self.request("GET", "/tasks/"))

    def health(self) -> dict[str, Any]:
        try:
            return dict(self.request("GET", "/health"))
        except ApiError as error:
            if error.status == 503 and isinstance(error.body, dict):  # type: ignore[attr-defined]
                return dict(error.body)  # type: ignore[attr-defined]
            raise


def _api_error(error: urllib.error.HTTPError) -> ApiError:
    try:
        body = json.loads(error.read() or b"null")
    except ValueError:
        body = None
    if isinstance(body, dict):
        api_error = ApiError(error.code, str(body.get("error", "error")), str(body.get("message", error.reason)))
    else:
        api_error = ApiError(error.code, "http_error", str(error.reason))
    api_error.body = body  # type: ignore[attr-defined]
    return api_error
