"""Who is asking: the client's address behind the router, its API key, its request id.

- Behind a platform's router `remote_addr` is the router. `TRUSTED_PROXY_HOPS` tells
  Werkzeug's `ProxyFix` how many `X-Forwarded-For` / `X-Forwarded-Proto` hops to believe;
  with 0 a client's own `X-Forwarded-For` changes nothing.
- Keys: `API_KEYS` names one key per client (kept as SHA-256 digests); `API_KEY` is one
  shared key. A named client is its own identity (rate limit, logs, `submitted_by`); with a
  shared key or none, the identity is the address, never a header the client chose.
- Request ids: the router's `X-Request-Id` when it looks like one (Heroku's rule: 20 to 200
  of `[A-Za-z0-9+/=-]`), else a new one; sent back, kept on the job, printed in log lines.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid

from flask import Flask, Response, current_app, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from trustcard import logs
from trustcard.api.operations import Guard, Header, Parameter
from trustcard.config import SINGLE_API_KEY_NAME, Settings
from trustcard.exceptions import Unauthorized

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9+/=-]{20,200}$")
REQUEST_ID_PARAMETER = Parameter(
    REQUEST_ID_HEADER,
    "header",
    "An id for this request, e.g. from a platform's router; kept when it is 20 to 200 characters "
    "of A-Z a-z 0-9 + / = -, else replaced by a new one. Sent back in the answer.",
    {"type": "string", "pattern": REQUEST_ID_PATTERN.pattern},
)
"""Taken by every operation (`start_request`)."""
REQUEST_ID_ANSWER_HEADER = Header(
    "This request's id: the one it brought when valid, else a new one.", REQUEST_ID_PARAMETER.schema
)
"""Sent on every answer (`finish_request`)."""
API_KEY_GUARD = Guard(
    "bearerAuth",
    "The API_KEY setting. When it is set, every /tasks endpoint needs "
    "'Authorization: Bearer <API_KEY>'; when it is not, they are open.",
    lambda settings: settings.requires_api_key,
    "The bearer token is missing or wrong",
    optional_when_off=True,
)
"""`require_api_key`, as the OpenAPI document declares it on the task endpoints."""


def _settings() -> Settings:
    settings: Settings = current_app.config["TRUSTCARD_SETTINGS"]
    return settings


def request_id() -> str:
    """This request's id (made on first use outside a request hook, e.g. in tests)."""
    if "request_id" not in g:
        g.request_id = _incoming_request_id() or uuid.uuid4().hex
    return str(g.request_id)


def _incoming_request_id() -> str | None:
    given = request.headers.get(REQUEST_ID_HEADER, "").strip()
    return given if REQUEST_ID_PATTERN.match(given) else None


def client_address() -> str:
    return request.remote_addr or "unknown"


def client_identity() -> str:
    """The client as the rate limit, the logs and `submitted_by` know it."""
    name = g.get("api_client")
    if name is not None and name != SINGLE_API_KEY_NAME:
        return str(name)
    return client_address()


def rate_limit_key() -> str:
    """A Redis-safe bucket name that a key name can never share with an address."""
    name = g.get("api_client")
    if name is not None and name != SINGLE_API_KEY_NAME:
        return f"key:{name}"
    return f"addr:{client_address()}"


def start_request() -> None:
    """App-level `before_request`: the request id and the client go on every log line."""
    logs.bind(request_id=request_id(), client=client_address(), task_id=None)


def finish_request(response: Response) -> Response:
    """App-level `after_request`: the request id goes back to the caller."""
    response.headers[REQUEST_ID_HEADER] = request_id()
    return response


def require_api_key() -> None:
    """`before_request` of the task endpoints when any key is configured. The token's digest
    is compared with every client's in constant time, so timing tells nothing about which."""
    clients = _settings().api_keys
    if not clients:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    digest = hashlib.sha256(token.strip().encode()).hexdigest().encode()
    found = None
    for client in clients:
        if hmac.compare_digest(digest, client.key_sha256.encode()):
            found = client.name
    if scheme.lower() != "bearer" or found is None:
        raise Unauthorized("This endpoint needs the header 'Authorization: Bearer <your API key>'.")
    g.api_client = found
    logs.bind(client=client_identity())


def init_app(app: Flask, settings: Settings) -> None:
    if settings.trusted_proxy_hops:
        hops = settings.trusted_proxy_hops
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.before_request(start_request)
    app.after_request(finish_request)
