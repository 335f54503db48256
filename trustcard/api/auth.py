"""Bearer-token guard for the task endpoints, active only when `API_KEY` is set."""

from __future__ import annotations

import hmac

from flask import current_app, request

from trustcard.exceptions import Unauthorized


def require_api_key() -> None:
    """`before_request` hook: compare the bearer token in constant time."""
    expected: str | None = current_app.config["TRUSTCARD_SETTINGS"].api_key
    if expected is None:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Unauthorized("This endpoint needs the header 'Authorization: Bearer <API_KEY>'.")
