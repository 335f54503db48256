"""The document's error answers, generated from the exception classes that routes raise.

Each class of `trustcard.exceptions` gives its status, its code (and other codes of the
same meaning), what it means, its details and whether it sends Retry-After; a route's
declaration only names the classes (`trustcard.api.operations.Raises`). Classes with
details get a model of their own, `<Class>Error`; the others answer the plain `Error`.
The web server's own refusals (gunicorn, before the app sees a request) are declared here
too: they are no exception of ours, but every operation may answer them.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, create_model

from trustcard.api import schemas
from trustcard.api.operations import Header, Raises
from trustcard.exceptions import TrustCardError

Refs = Mapping[type[BaseModel], dict[str, str]]

RETRY_AFTER = Header("Seconds to wait before trying again.", {"type": "integer", "minimum": 0})
WEB_SERVER_REFUSALS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The web server could not read the request: a malformed request line, HTTP version or header"),
    414: ("uri_too_long", "The request line is over the web server's limit of 4094 bytes; send long parameters in a "
          "JSON body"),
    431: ("request_header_fields_too_large", "Too many header fields (over 100), or one over 8190 bytes"),
}
"""What gunicorn itself refuses before the app sees the request (`trustcard.gunicorn_worker`),
answered with `schemas.RequestRefusedError`."""


def meaning(error: type[TrustCardError]) -> str:
    """The class's docstring's first paragraph, as one line without its final period."""
    paragraph = inspect.cleandoc(error.__doc__ or error.__name__).split("\n\n", 1)[0]
    return " ".join(paragraph.split()).rstrip(".")


def codes(error: type[TrustCardError]) -> tuple[str, ...]:
    return (error.code, *error.other_codes)


@functools.cache
def error_model(error: type[TrustCardError]) -> type[BaseModel]:
    """`schemas.Error` for a class without details; else `<Class>Error`: `Error` with the
    class's code(s) as the only values of `error`, and its details' fields."""
    if error.Details is None and not error.other_codes:
        return schemas.Error
    fields: dict[str, Any] = {"error": (Literal[codes(error)], ...)}
    if error.Details is not None:
        fields.update((name, (info.annotation, info)) for name, info in error.Details.model_fields.items())
    return create_model(  # type: ignore[no-any-return]
        f"{error.__name__}Error",
        __base__=schemas.Error,
        __doc__=inspect.cleandoc(error.__doc__ or ""),
        __module__=__name__,
        **fields,
    )


def exception_classes(base: type[TrustCardError] = TrustCardError) -> Iterator[type[TrustCardError]]:
    """Every subclass of `base`, at any depth."""
    for subclass in base.__subclasses__():
        yield subclass
        yield from exception_classes(subclass)


def error_models() -> list[type[BaseModel]]:
    """Every error answer's own model, one per exception class with details."""
    models = (error_model(error) for error in exception_classes())
    return list(dict.fromkeys(model for model in models if model is not schemas.Error))


def _sentence(parts: list[str]) -> str:
    """Parts joined as one sentence: 'A (error `a`); or b (error `b`).'"""
    joined = "; or ".join(part if i == 0 else part[:1].lower() + part[1:] for i, part in enumerate(parts))
    return joined + "."


def _example(code: str, summary: str, details: Mapping[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "value": {"error": code, "message": f"{summary}.", **details}}


def error_answers(raised: Iterable[Raises], refs: Refs) -> dict[int, dict[str, Any]]:
    """One answer per status: the classes' schema (one model, or any of theirs), a
    description naming each code, an example per code, Retry-After when they send it."""
    by_status: dict[int, list[Raises]] = {}
    for item in raised:
        by_status.setdefault(item.error.status_code, []).append(item)
    answers: dict[int, dict[str, Any]] = {}
    for status, group in by_status.items():
        models = list(dict.fromkeys(error_model(item.error) for item in group))
        schema = refs[models[0]] if len(models) == 1 else {"anyOf": [refs[model] for model in models]}
        parts, examples = [], {}
        for item in group:
            reason = item.reason or meaning(item.error)
            names = " or ".join(f"`{code}`" for code in codes(item.error))
            parts.append(f"{reason} (error {names})")
            examples.update({code: _example(code, reason, item.error.example) for code in codes(item.error)})
        answer: dict[str, Any] = {
            "description": _sentence(parts),
            "content": {"application/json": {"schema": schema, "examples": examples}},
        }
        if any(item.error.retry_after_seconds is not None for item in group):
            answer["headers"] = {"Retry-After": RETRY_AFTER.to_openapi()}
        answers[status] = answer
    return answers


def add_web_server_refusals(responses: dict[str, Any], refs: Refs) -> None:
    """The web server's refusals on an operation. A 400 the operation answers itself keeps
    its own schema (the refusal's body fits it too) and gains the refusal's words."""
    for status, (code, reason) in WEB_SERVER_REFUSALS.items():
        answer = responses.get(str(status))
        if answer is None:
            media = {"schema": refs[schemas.RequestRefusedError], "examples": {code: _example(code, reason, {})}}
            responses[str(status)] = {"description": f"{reason} (error `{code}`).", "content": {"application/json": media}}
        else:
            answer["description"] = _sentence([answer["description"].rstrip("."), f"{reason} (error `{code}`)"])
