"""One keep-alive HTTP connection, as a real API client holds it, for the load scripts.

It reopens when the server closes it (one retry), can bind its own source address (the
rate limit counts per client address, so each simulated client needs its own), and keeps
the last answer's Retry-After for clients that honour it.
"""

from __future__ import annotations

import http.client
import json
from typing import Any


class KeepAliveConnection:
    def __init__(self, host: str, port: int, *, headers: dict[str, str] | None = None,
                 source_address: str | None = None, timeout: float = 30) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.headers = headers or {}
        self.source = (source_address, 0) if source_address else None
        self.connection: http.client.HTTPConnection | None = None
        self.retry_after = 0.0

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """The status and body of one request (with `body`, sent as JSON); raises only when a
        fresh connection fails too."""
        sent = {**self.headers, **({"Content-Type": "application/json"} if body is not None else {}), **(headers or {})}
        for attempt in (1, 2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout, source_address=self.source
                )
            try:
                self.connection.request(method, path, body=body, headers=sent)
                response = self.connection.getresponse()
                self.retry_after = float(response.headers.get("Retry-After") or 0)
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                self.connection = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def request_json(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """The status and decoded JSON answer; `body`, when given, goes as JSON."""
        status, answer = self.request(method, path, None if body is None else json.dumps(body).encode(), headers)
        return status, json.loads(answer) if answer else {}

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
