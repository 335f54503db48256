"""One webhook POST to a checked target: to its checked addresses only, no redirects, short timeouts.

`http.client` with the connection's socket made here: it connects to an address that
`trustcard.callback_urls` approved (never a second DNS lookup, which could answer
differently), sends the host's name in `Host` and, over TLS, checks the certificate
against that name. `http.client` never follows redirects, so a 3xx is just an answer.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
from dataclasses import dataclass

from trustcard.callback_urls import CallbackTarget

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 10.0
"""The longest wait for each read of the answer; the job's hard limit (30 s) caps the whole."""
USER_AGENT = "TrustCard-Webhook/1"


@dataclass(frozen=True)
class Answer:
    """The receiver's status line, and where a redirect pointed (not followed)."""

    status: int
    reason: str
    location: str | None


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: CallbackTarget, address: str) -> None:
        super().__init__(target.host, target.port, timeout=READ_TIMEOUT_SECONDS)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), CONNECT_TIMEOUT_SECONDS)
        self.sock.settimeout(READ_TIMEOUT_SECONDS)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: CallbackTarget, address: str) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(target.host, target.port, timeout=READ_TIMEOUT_SECONDS, context=self._tls)
        self._address = address

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), CONNECT_TIMEOUT_SECONDS)
        raw.settimeout(READ_TIMEOUT_SECONDS)
        try:
            self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def post(target: CallbackTarget, body: bytes, headers: dict[str, str]) -> Answer:
    """POST `body` to `target`, trying its addresses in order until one accepts the
    connection; raises `OSError` (refused, timed out, TLS) when none answers."""
    error: OSError | None = None
    for address in target.addresses:
        connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
        connection = connection_class(target, address)
        try:
            connection.request(
                "POST", target.path, body=body, headers={"User-Agent": USER_AGENT, "Connection": "close", **headers}
            )
            response = connection.getresponse()
            return Answer(response.status, response.reason, response.getheader("Location"))
        except (ConnectionRefusedError, socket.gaierror) as refused:
            error = refused  # this address is not listening: the next one may be
            continue
        except OSError as failed:
            if connection.sock is None:  # never connected (unreachable, connect timeout): try the next
                error = failed
                continue
            raise
        finally:
            connection.close()
    assert error is not None
    raise error
