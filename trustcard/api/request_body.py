"""Reading request input: size limit first, then query string and JSON body merged."""

from __future__ import annotations

from typing import Any

from flask import current_app, request

from trustcard.exceptions import BadRequest, PayloadTooLarge


def refuse_oversized_body() -> None:
    """`before_request` hook: answer 413 from the declared length, before reading any body."""
    limit: int = current_app.config["MAX_CONTENT_LENGTH"]
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"The request body is {length} bytes; the limit is {limit} bytes.", limit=limit)


def task_parameters() -> dict[str, Any]:
    """Parameters from the query string and, when sent, a JSON object body.

    A parameter given twice (twice in the query, or in both places) is an error, not a
    silent choice between two values.
    """
    params: dict[str, Any] = {}
    for name, values in request.args.lists():
        if len(values) > 1:
            raise BadRequest(f"Parameter {name!r} is given more than once.", parameter=name)
        params[name] = values[0]
    body = _json_body()
    for name, value in body.items():
        if name in params:
            raise BadRequest(f"Parameter {name!r} is given in both the query string and the body.", parameter=name)
        params[name] = value
    return params


def _json_body() -> dict[str, Any]:
    raw = request.get_data(cache=True)  # bounded by MAX_CONTENT_LENGTH
    if not raw.strip():
        return {}
    if not request.is_json:
        raise BadRequest("A request body must be JSON, sent with 'Content-Type: application/json'.")
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequest("The request body is not valid JSON.")
    if not isinstance(body, dict):
        raise BadRequest("The JSON body must be an object of parameters, like {\"x\": 7, \"y\": 8}.")
    return body
