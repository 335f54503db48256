"""One JSON shape for every error: `{"error": code, "message": text, ...details}`.

Flask's own HTTP errors (404, 405, 413) and anything unexpected go through here too,
so a client never sees HTML or a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from trustcard.exceptions import TrustCardError

log = logging.getLogger(__name__)


def error_response(http_status: int, code: str, message: str, **details: Any) -> Response:
    response = jsonify({"error": code, "message": message, **details})
    response.status_code = http_status
    return response


def _from_trustcard_error(error: TrustCardError) -> Response:
    response = error_response(error.status_code, error.code, error.message, **error.details)
    if error.retry_after_seconds is not None:  # ServiceUnavailable's and RateLimited's
        response.headers["Retry-After"] = str(error.retry_after_seconds)
    return response


def _from_http_exception(error: HTTPException) -> Response:
    code = (error.name or "error").lower().replace(" ", "_")
    response = error_response(error.code or 500, code, error.description or error.name)
    if error.code == 405 and error.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return response


def _from_unexpected(error: Exception) -> Response:
    log.exception("unhandled error: %s", error)
    return error_response(500, "internal_error", "The server hit an unexpected error; it has been logged.")


def init_app(app: Flask) -> None:
    app.register_error_handler(TrustCardError, _from_trustcard_error)
    app.register_error_handler(HTTPException, _from_http_exception)
    app.register_error_handler(Exception, _from_unexpected)
