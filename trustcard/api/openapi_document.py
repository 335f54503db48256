"""Building the OpenAPI 3.1 document from the app's routes and their declarations.

Each rule of the app's URL map whose view carries a declaration (`trustcard.api.operations`)
becomes an operation at the rule's path; the submit rule, declared per job type, becomes
one path per catalogued job type. What every operation shares is added here: the
`X-Request-Id` parameter and header, the web server's refusals, the guard's 401 and
security, and the rate limit's 429 and headers.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Iterator
from typing import Any

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from trustcard.api import schemas
from trustcard.api.auth import REQUEST_ID_ANSWER_HEADER, REQUEST_ID_HEADER, REQUEST_ID_PARAMETER
from trustcard.api.error_answers import Refs, add_web_server_refusals, error_answers, error_models
from trustcard.api.operations import Answer, Guard, Operation, Raises, declaration_of
from trustcard.api.ratelimit import RATE_LIMIT_HEADERS
from trustcard.catalogue import JOB_TYPES
from trustcard.config import Settings
from trustcard.exceptions import RateLimited, Unauthorized

OPENAPI_VERSION = "3.1.0"
TITLE = "TrustCard queue service"
SCHEMA_REF = "#/components/schemas/{model}"
AUTOMATIC_METHODS = {"HEAD", "OPTIONS"}
RULE_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
DESCRIPTION = (
    "Accepts slow work (Instagram post analysis and test jobs), answers at once with a task id, "
    "and reports status, progress and results. Submit a job type with its parameters in the "
    "query string or as a JSON object body (each parameter once), then poll the task's URL.\n\n"
    'Every error is JSON: `{"error": code, "message": text, ...details}`, also the ones the web '
    "server answers itself (400, 414, 431) before the app reads a request.\n\n"
    f"Every answer carries `{REQUEST_ID_HEADER}`: the one the request brought when it is 20 to 200 "
    "characters of `A-Z a-z 0-9 + / = -` (as a platform's router sets it), else a new one. The same id "
    "is kept on a submitted task and appears in the web's and the worker's log lines for it."
)
TAGS = [
    {"name": "tasks", "description": "Submit, follow, cancel and list tasks."},
    {"name": "service", "description": "The service's own health and metrics."},
    {"name": "documentation", "description": "This document and its interactive page."},
]


def declared_operations(app: Flask) -> Iterator[tuple[str, str, Operation]]:
    """(path, method, operation) for every declared route, in the order the app registered them."""
    for rule in app.url_map.iter_rules():
        declaration = declaration_of(app.view_functions[rule.endpoint])
        if declaration is None:
            continue
        path = RULE_VARIABLE.sub(r"{\1}", rule.rule)
        methods = sorted((rule.methods or set()) - AUTOMATIC_METHODS)
        if isinstance(declaration, Operation):
            declared = {p.name for p in declaration.parameters if p.location == "path"}
            if declared != set(rule.arguments):
                raise ValueError(f"{rule.rule}: path parameters declared {sorted(declared)}, rule has {rule.arguments}")
            for method in methods:
                yield path, method.lower(), declaration
            continue
        (variable,) = rule.arguments  # one path per job type, at its route
        for job_type in JOB_TYPES:
            for method in methods:
                yield path.replace(f"{{{variable}}}", job_type.route), method.lower(), declaration(job_type)


def build_document(app: Flask) -> dict[str, Any]:
    """The whole OpenAPI document for `app`, with the settings it runs with (API_KEY,
    METRICS_TOKEN decide which guards are on)."""
    settings: Settings = app.config["TRUSTCARD_SETTINGS"]
    declared = list(declared_operations(app))
    components, refs = _component_schemas([operation for _, _, operation in declared])
    paths: dict[str, dict[str, Any]] = {}
    guards: dict[str, Guard] = {}
    for path, method, operation in declared:
        item = paths.setdefault(path, {})
        path_parameters = [p.to_openapi() for p in operation.parameters if p.location == "path"]
        if path_parameters:
            item.setdefault("parameters", path_parameters)
        item[method] = _operation(operation, settings, refs)
        if operation.guard is not None:
            guards.setdefault(operation.guard.scheme, operation.guard)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": TITLE, "version": _version(), "description": DESCRIPTION},
        "tags": TAGS,
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                scheme: {"type": "http", "scheme": "bearer", "description": guard.description}
                for scheme, guard in guards.items()
            },
        },
    }


def _version() -> str:
    try:
        return importlib.metadata.version("trustcard-queue")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0.1.0"


def _component_schemas(operations: list[Operation]) -> tuple[dict[str, Any], Refs]:
    """JSON Schemas of every model the operations use, as components, and a `$ref` for
    each. Request models in validation mode, answers (errors included) in serialization mode."""
    bodies = [operation.body for operation in operations if operation.body is not None]
    answers = [
        answer.body
        for operation in operations
        for answer in operation.answers.values()
        if isinstance(answer.body, type) and issubclass(answer.body, BaseModel)
    ]
    answers += [schemas.Error, schemas.RequestRefusedError, *error_models()]
    keys: list[tuple[type[BaseModel], Any]] = [(model, "validation") for model in dict.fromkeys(bodies)]
    keys += [(model, "serialization") for model in dict.fromkeys(answers)]
    mapping, definitions = models_json_schema(keys, ref_template=SCHEMA_REF)
    refs = {model: ref for (model, _mode), ref in mapping.items()}
    return definitions.get("$defs", {}), refs


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One optional query parameter per field of the model: a parameter may come in the
    query string or in the body, so neither place alone is required."""
    schema = model.model_json_schema(ref_template=SCHEMA_REF)
    required = set(schema.get("required", []))
    parameters = []
    for name, field_schema in schema.get("properties", {}).items():
        field_schema = dict(field_schema)
        field_schema.pop("title", None)
        description = field_schema.pop("description", "")
        where = "Required, here or in the body." if name in required else "Optional, here or in the body."
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": f"{description} {where}".strip(),
                "schema": field_schema,
            }
        )
    return parameters


def _operation(operation: Operation, settings: Settings, refs: Refs) -> dict[str, Any]:
    document: dict[str, Any] = {
        "tags": [operation.tag],
        "operationId": operation.operation_id,
        "summary": operation.summary,
    }
    if operation.description:
        document["description"] = operation.description
    raised = operation.raised()
    guard = operation.guard
    if guard is not None and guard.is_on(settings):
        document["security"] = [{guard.scheme: []}]
        raised.insert(0, Raises(Unauthorized, guard.refusal))
    elif guard is not None and guard.optional_when_off:
        document["security"] = [{guard.scheme: []}, {}]
    if operation.rate_limited:
        raised.append(Raises(RateLimited))
    document["parameters"] = [
        *(_query_parameters(operation.query_model) if operation.query_model else []),
        *(p.to_openapi() for p in operation.parameters if p.location != "path"),
        REQUEST_ID_PARAMETER.to_openapi(),
    ]
    if operation.body is not None:
        document["requestBody"] = {
            "required": False,
            "description": operation.body_description,
            "content": {"application/json": {"schema": refs[operation.body]}},
        }
    document["responses"] = _responses(operation, raised, refs)
    return document


def _responses(operation: Operation, raised: list[Raises], refs: Refs) -> dict[str, Any]:
    responses = {str(status): _answer(answer, refs) for status, answer in operation.answers.items()}
    for status, answer in error_answers(raised, refs).items():
        if str(status) in responses:
            raise ValueError(f"{operation.operation_id}: {status} is both declared and raised")
        responses[str(status)] = answer
    add_web_server_refusals(responses, refs)
    rate_limit = {name: header.to_openapi() for name, header in RATE_LIMIT_HEADERS.items()}
    for status, answer in responses.items():
        headers = answer.setdefault("headers", {})
        if operation.rate_limited and (status.startswith("2") or status == "429"):
            headers.update(rate_limit)
        headers[REQUEST_ID_HEADER] = REQUEST_ID_ANSWER_HEADER.to_openapi()
    return dict(sorted(responses.items()))


def _answer(answer: Answer, refs: Refs) -> dict[str, Any]:
    document: dict[str, Any] = {"description": answer.description}
    if isinstance(answer.body, type):
        document["content"] = {answer.media_type: {"schema": refs[answer.body]}}
    elif answer.body is not None:
        document["content"] = {answer.media_type: {"schema": dict(answer.body)}}
    if answer.headers:
        document["headers"] = {name: header.to_openapi() for name, header in answer.headers.items()}
    if answer.links:
        document["links"] = {
            "".join(part.title() for part in operation_id.split("_")): {
                "operationId": operation_id,
                "parameters": {"task_id": "$response.body#/task_id"},
            }
            for operation_id in answer.links
        }
    return document
