"""The OpenAPI 3.1 document at `/openapi.json` and the interactive page at `/docs`.

The document is generated from the models that do the work: each catalogued job
type's parameter model (`trustcard.params`, the one `TaskService.submit` validates
with) gives its query parameters and its JSON body, and the response models in
`trustcard.api.schemas` give the answers and the error shape. pydantic writes the
JSON Schemas; this module only places them in paths and operations.

Why our own small module rather than a Flask OpenAPI integration (flask-openapi3,
spectree, APIFlask): each of them documents what it validates itself, so adopting one
means handing it our request handling, and that breaks fixed parts of the contract.

- flask-openapi3 replaces `Flask` with its `OpenAPI` class and our blueprints with
  `APIBlueprint`, passes validated models into the views as arguments, and validates
  the query string and the body as two separate models. spectree and APIFlask work
  the same way: a decorator per view with one model per location. Our submissions
  take each parameter from either place, refuse one given in both, and check the
  merged set against one model.
- Their validation failures are their own answers (flask-openapi3 and spectree: a
  list of pydantic errors, APIFlask: `{"message", "detail"}`). Our errors have the
  fixed shape `{"error": code, "message": text, ...}`, with a 422 that names each
  parameter. Each library has a hook to change this, but then the document it writes
  describes its own shape unless every operation is annotated again by hand.
- The catalogue's job types share one rule, `POST /tasks/<path:job_route>`. A library
  that reads the URL map documents that as one path with a `job_route` parameter;
  clients need one path per job type with that type's own parameters.

Generating the document here keeps the views as they are, costs one module, and a
unit test holds it to the app: every route the app serves must be in the document.

The page at `/docs` is Swagger UI, served from the files that the `flask-swagger-ui`
package ships (a current Swagger UI 5 release, depending only on Flask), so it works
with no network: no CDN, and the validator badge (which calls out) is switched off.
"""

from __future__ import annotations

import importlib.metadata
import logging
from importlib.resources import files
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template_string, url_for
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from trustcard.api import schemas
from trustcard.api.auth import REQUEST_ID_HEADER, REQUEST_ID_PATTERN
from trustcard.api.task_stream import LAST_EVENT_ID_HEADER, MAX_WAIT_SECONDS
from trustcard.api.task_routes import IDEMPOTENCY_HEADER, MAX_IDEMPOTENCY_KEY_LENGTH
from trustcard.callback_urls import CALLBACK_HEADER, MAX_URL_LENGTH
from trustcard.catalogue import JOB_TYPES, JobType
from trustcard.config import Settings
from trustcard.task_service import TASK_ID_PATTERN

log = logging.getLogger(__name__)

OPENAPI_VERSION = "3.1.0"
TITLE = "TrustCard queue service"
SCHEMA_REF = "#/components/schemas/{model}"
BEARER_SCHEME = "bearerAuth"
METRICS_SCHEME = "metricsToken"
RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": "How many submissions this client may make at once (the bucket's size).",
    "RateLimit-Remaining": "How many it may make now, before it is refused.",
    "RateLimit-Reset": "Seconds until the bucket is full again.",
}
WEB_SERVER_REFUSALS = {
    "400": "The web server could not read the request: a malformed request line, HTTP version or header "
    "(error `bad_request`).",
    "414": "The request line is over the web server's limit of 4094 bytes (error `uri_too_long`); send long "
    "parameters in a JSON body.",
    "431": "Too many header fields (over 100), or one over 8190 bytes (error `request_header_fields_too_large`).",
}
"""What gunicorn itself refuses before the app sees the request (`trustcard.gunicorn_worker`)."""
SWAGGER_UI_DIR = str(files("flask_swagger_ui") / "dist")
"""Swagger UI's built files, as shipped inside the flask-swagger-ui package."""

bp = Blueprint("openapi", __name__, static_folder=SWAGGER_UI_DIR, static_url_path="/docs/assets")


@bp.get("/openapi.json")
def openapi_document() -> Response:
    """The document, built once per app (it depends on the settings: API_KEY)."""
    document = current_app.extensions.get("trustcard.openapi")
    if document is None:
        document = build_document(current_app.config["TRUSTCARD_SETTINGS"])
        current_app.extensions["trustcard.openapi"] = document
        log.debug("OpenAPI document built: %d paths", len(document["paths"]))
    return jsonify(document)


@bp.get("/docs")
def docs() -> str:
    """Swagger UI on our own document, every asset served by this app."""
    return render_template_string(
        DOCS_PAGE,
        title=f"{TITLE} API",
        css_url=url_for("openapi.static", filename="swagger-ui.css"),
        js_url=url_for("openapi.static", filename="swagger-ui-bundle.js"),
        icon_url=url_for("openapi.static", filename="favicon-32x32.png"),
        spec_url=url_for("openapi.openapi_document"),
    )


DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{{ title }}</title>
  <link rel="stylesheet" href="{{ css_url }}">
  <link rel="icon" type="image/png" href="{{ icon_url }}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{{ js_url }}"></script>
  <script>
    window.ui = SwaggerUIBundle({
      url: {{ spec_url | tojson }},
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout"
    });
  </script>
</body>
</html>
"""


def build_document(settings: Settings) -> dict[str, Any]:
    """The whole OpenAPI document for an app running with `settings`."""
    components, refs = _component_schemas()
    secured = settings.requires_api_key
    paths: dict[str, dict[str, Any]] = {}
    for job_type in JOB_TYPES:
        paths[f"/tasks/{job_type.route}"] = {"post": _submit_operation(job_type, refs, secured)}
    paths["/tasks/"] = {"get": _running_operation(refs, secured)}
    paths["/tasks/{task_id}"] = {
        "parameters": [_task_id_parameter()],
        "get": _status_operation(refs, secured),
        "delete": _cancel_operation(refs, secured),
    }
    paths["/tasks/{task_id}/events"] = {
        "parameters": [_task_id_parameter()],
        "get": _events_operation(refs, secured),
    }
    paths["/tasks/{task_id}/retry"] = {
        "parameters": [_task_id_parameter()],
        "post": _retry_operation(refs, secured),
    }
    paths["/health"] = {"get": _health_operation(refs)}
    paths["/metrics"] = {"get": _metrics_operation(refs, settings.metrics_token is not None)}
    paths["/openapi.json"] = {"get": _document_operation()}
    paths["/docs"] = {"get": _docs_operation()}
    for item in paths.values():
        for key, operation in item.items():
            if key != "parameters":
                _add_request_id_and_refusals(operation, refs)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": TITLE,
            "version": _version(),
            "description": (
                "Accepts slow work (Instagram post analysis and test jobs), answers at once with a task id, "
                "and reports status, progress and results. Submit a job type with its parameters in the "
                "query string or as a JSON object body (each parameter once), then poll the task's URL.\n\n"
                'Every error is JSON: `{"error": code, "message": text, ...details}`, also the ones the web '
                "server answers itself (400, 414, 431) before the app reads a request.\n\n"
                f"Every answer carries `{REQUEST_ID_HEADER}`: the one the request brought when it is 20 to 200 "
                "characters of `A-Z a-z 0-9 + / = -` (as a platform's router sets it), else a new one. The same id "
                "is kept on a submitted task and appears in the web's and the worker's log lines for it."
            ),
        },
        "tags": [
            {"name": "tasks", "description": "Submit, follow, cancel and list tasks."},
            {"name": "service", "description": "The service's own health and metrics."},
            {"name": "documentation", "description": "This document and its interactive page."},
        ],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                BEARER_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "The API_KEY setting. When it is set, every /tasks endpoint needs "
                        "'Authorization: Bearer <API_KEY>'; when it is not, they are open."
                    ),
                },
                METRICS_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "The METRICS_TOKEN setting. When it is set, GET /metrics needs "
                        "'Authorization: Bearer <METRICS_TOKEN>'; when it is not, it is open."
                    ),
                },
            },
        },
    }


def _version() -> str:
    try:
        return importlib.metadata.version("trustcard-queue")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0.1.0"


def _component_schemas() -> tuple[dict[str, Any], dict[type[BaseModel], dict[str, str]]]:
    """JSON Schemas of every request and response model, as components, and a `$ref`
    for each model. Request models in validation mode, answers in serialization mode."""
    request_models = list(dict.fromkeys(job_type.params for job_type in JOB_TYPES))
    keys: list[tuple[type[BaseModel], Any]] = [(model, "validation") for model in request_models]
    keys += [(model, "serialization") for model in schemas.RESPONSE_MODELS]
    mapping, definitions = models_json_schema(keys, ref_template=SCHEMA_REF)
    refs = {model: ref for (model, _mode), ref in mapping.items()}
    return definitions.get("$defs", {}), refs


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _answer(
    description: str,
    ref: dict[str, str],
    headers: dict[str, Any] | None = None,
    links: dict[str, Any] | None = None,
) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": _json(ref)}
    if headers:
        answer["headers"] = headers
    if links:
        answer["links"] = links
    return answer


def _task_links(*operation_ids: str) -> dict[str, Any]:
    """Links from an answer that names a task to the operations on that task: clients
    (and stateful test tools) learn where the task id goes next."""
    return {
        "".join(part.title() for part in operation_id.split("_")): {
            "operationId": operation_id,
            "parameters": {"task_id": "$response.body#/task_id"},
        }
        for operation_id in operation_ids
    }


def _retry_after() -> dict[str, Any]:
    return {
        "Retry-After": {
            "description": "Seconds to wait before trying again.",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    }


def _rate_limit_headers() -> dict[str, Any]:
    """The client's token bucket after this request: on every answer to a submission."""
    return {
        name: {"description": description, "required": True, "schema": {"type": "integer", "minimum": 0}}
        for name, description in RATE_LIMIT_HEADERS.items()
    }


def _request_id_schema() -> dict[str, Any]:
    return {"type": "string", "pattern": REQUEST_ID_PATTERN.pattern}


def _add_request_id_and_refusals(operation: dict[str, Any], refs: dict[type[BaseModel], dict[str, str]]) -> None:
    """What every operation shares: the optional `X-Request-Id` request header, the same
    header on every answer, and the web server's own refusals (a 400 the operation
    documents already keeps its own schema, which the refusal's body also fits)."""
    operation["parameters"] = [
        *operation.get("parameters", []),
        {
            "name": REQUEST_ID_HEADER,
            "in": "header",
            "required": False,
            "description": (
                "An id for this request, e.g. from a platform's router; kept when it is 20 to 200 characters "
                "of A-Z a-z 0-9 + / = -, else replaced by a new one. Sent back in the answer."
            ),
            "schema": _request_id_schema(),
        },
    ]
    responses: dict[str, Any] = operation["responses"]
    for status, description in WEB_SERVER_REFUSALS.items():
        responses.setdefault(status, _answer(description, refs[schemas.RequestRefusedError]))
    for answer in responses.values():
        answer["headers"] = {
            **answer.get("headers", {}),
            REQUEST_ID_HEADER: {
                "description": "This request's id: the one it brought when valid, else a new one.",
                "required": True,
                "schema": _request_id_schema(),
            },
        }
    operation["responses"] = dict(sorted(responses.items()))


def _task_responses(
    refs: dict[type[BaseModel], dict[str, str]], secured: bool, *, enqueues: bool = False
) -> dict[str, Any]:
    """The errors every /tasks endpoint can answer, and those of the ones that enqueue
    (POST): the per-client rate limit and the queue-depth cap."""
    error = refs[schemas.Error]
    responses: dict[str, Any] = {}
    if secured:
        responses["401"] = _answer("The bearer token is missing or wrong (error `unauthorized`).", error)
    unavailable = "The task queue (Redis) is unreachable (error `queue_unavailable`)"
    if enqueues:
        unavailable += ", or the queue holds as many tasks as it may (error `queue_full`)"
        responses["429"] = _answer(
            "Too many submissions from this client: its bucket is empty (error `rate_limited`).",
            error,
            {**_retry_after(), **_rate_limit_headers()},
        )
    responses["503"] = _answer(f"{unavailable}; try again later.", error, _retry_after())
    return responses


def _security(secured: bool) -> list[dict[str, list[str]]]:
    """The bearer scheme: required when API_KEY is set, accepted but not needed otherwise."""
    return [{BEARER_SCHEME: []}] if secured else [{BEARER_SCHEME: []}, {}]


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


def _submit_operation(job_type: JobType, refs: dict[type[BaseModel], dict[str, str]], secured: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": _answer(
            "Sent with `Prefer: wait=N`, and the task ended within those N seconds: its final view, as "
            "GET /tasks/{task_id} answers it (status completed, failed or cancelled).",
            refs[schemas.Task],
            {**_location(), **_rate_limit_headers(), **_preference_applied()},
        ),
        "202": _answer(
            "Accepted and queued (with `Prefer: wait=N`: and not ended within N seconds).",
            refs[schemas.SubmittedTask],
            {
                **_location(),
                **_rate_limit_headers(),
                "Idempotent-Replayed": {
                    "description": f"'true' when this is the earlier task with the same {IDEMPOTENCY_HEADER}.",
                    "required": False,
                    "schema": {"type": "string", "enum": ["true"]},
                },
            },
            _task_links("get_task", "cancel_task"),
        ),
        "400": _answer(
            "The body is not a JSON object, or a parameter is given twice (error `bad_request`); or the web "
            "server could not read the request (a malformed request line, HTTP version or header).",
            refs[schemas.BadRequestError],
        ),
        "409": _answer(
            f"The {IDEMPOTENCY_HEADER} was used before for a different request (error `idempotency_key_reused`).",
            refs[schemas.Error],
        ),
        "413": _answer("The body is over the size limit.", refs[schemas.PayloadTooLargeError]),
        "422": _answer(
            "A parameter is missing, unknown, of the wrong type or out of range, or the Callback-URL is "
            "refused (error `validation_error`).",
            refs[schemas.ValidationFailedError],
        ),
    }
    responses.update(_task_responses(refs, secured, enqueues=True))
    return {
        "tags": ["tasks"],
        "operationId": f"submit_{job_type.name.replace('.', '_')}",
        "summary": f"Submit {job_type.name}",
        "description": (
            f"{job_type.summary}\n\nQueue `{job_type.queue}`. Parameters go in the query string or in a "
            "JSON object body (`Content-Type: application/json`), each parameter once; together they must "
            f"satisfy `{job_type.params.__name__}`."
        ),
        "security": _security(secured),
        "parameters": [
            *_query_parameters(job_type.params), _idempotency_parameter(), _callback_parameter(), _prefer_parameter()
        ],
        "requestBody": {
            "required": False,
            "description": "The parameters as a JSON object, instead of (or as well as) the query string.",
            "content": _json(refs[job_type.params]),
        },
        "responses": dict(sorted(responses.items())),
    }


def _location() -> dict[str, Any]:
    return {
        "Location": {
            "description": "The task's URL, to poll for its status.",
            "required": True,
            "schema": {"type": "string"},
        }
    }


def _idempotency_parameter() -> dict[str, Any]:
    return {
        "name": IDEMPOTENCY_HEADER,
        "in": "header",
        "required": False,
        "description": (
            "Any unique text: the same key again, within the result lifetime, answers with the first task "
            "instead of queuing another. The same key with other parameters is refused (409)."
        ),
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH},
    }


def _prefer_parameter() -> dict[str, Any]:
    return {
        "name": "Prefer",
        "in": "header",
        "required": False,
        "description": (
            "`wait=N` (RFC 7240): hold the answer up to N seconds (at most 25) for the task to end; if it does, "
            "the answer is 200 with its final view, so a quick task costs one round trip. A preference that "
            "cannot be read is ignored."
        ),
        "schema": {"type": "string"},
        "example": "wait=10",
    }


def _preference_applied() -> dict[str, Any]:
    return {
        "Preference-Applied": {
            "description": "`wait=N`: the wait that was applied.",
            "required": False,
            "schema": {"type": "string"},
        }
    }


def _callback_parameter() -> dict[str, Any]:
    return {
        "name": CALLBACK_HEADER,
        "in": "header",
        "required": False,
        "description": (
            "An http(s) URL: when the task ends (completed, failed or cancelled), its final view (as GET "
            "/tasks/{task_id} answers it) is POSTed there as JSON, with the header `TrustCard-Signature: "
            "t=<unix time>,v1=<hex HMAC-SHA256 of \"<t>.<body>\" with WEBHOOK_SECRET>`. A 2xx answer is a "
            "delivery; anything else, a redirect or no answer within 15 s is retried with back-off (first "
            "within 5 s, for about a day); the task's `callback` shows each attempt. Refused with 422 when "
            "the server has no WEBHOOK_SECRET, for credentials in the URL, over 2,048 characters, and for a "
            "host that resolves to a loopback, private, link-local (metadata) or other non-public address."
        ),
        "schema": {"type": "string", "format": "uri", "maxLength": MAX_URL_LENGTH},
    }


def _task_id_parameter() -> dict[str, Any]:
    return {
        "name": "task_id",
        "in": "path",
        "required": True,
        "description": "The id from the submit answer.",
        "schema": {"type": "string", "pattern": TASK_ID_PATTERN.pattern},
    }


def _status_operation(refs: dict[type[BaseModel], dict[str, str]], secured: bool) -> dict[str, Any]:
    responses = {
        "200": _answer("The task's status, result, error and progress.", refs[schemas.Task]),
        "404": _answer(
            "No such task: unknown, or its result has expired (error `task_not_found`).", refs[schemas.Error]
        ),
        **_task_responses(refs, secured),
    }
    responses["422"] = _answer("`wait` is not a number of seconds in (0, 25] (error `validation_error`).",
                               refs[schemas.ValidationFailedError])
    return {
        "tags": ["tasks"],
        "operationId": "get_task",
        "summary": "Read a task",
        "description": (
            "With `wait=N`, a long poll: answers as soon as the task ends, else after N seconds with its "
            "state then. Without it, at once."
        ),
        "security": _security(secured),
        "parameters": [
            {
                "name": "wait",
                "in": "query",
                "required": False,
                "description": "Seconds to wait for the task's end before answering (more than 0, at most 25).",
                "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_WAIT_SECONDS},
            }
        ],
        "responses": dict(sorted(responses.items())),
    }


def _events_operation(refs: dict[type[BaseModel], dict[str, str]], secured: bool) -> dict[str, Any]:
    responses = {
        "200": {
            "description": (
                "Server-Sent Events, until the task ends. `event: state` (the task, as GET /tasks/{task_id} "
                "answers it) at once; `event: progress` (the progress object) each time the job reports "
                "progress; `event: end` (the task's final view), then the stream closes. A comment "
                "(`: keep-alive`) every EVENTS_HEARTBEAT_SECONDS (15). Every event has an `id:`: progress "
                "writes are numbered 1, 2, ...; `state` carries the number of the last one it includes, `end` "
                "the number after the last one. Reconnecting with `Last-Event-ID` sends what came after it."
            ),
            "headers": {
                "Cache-Control": {"description": "`no-cache`.", "schema": {"type": "string"}},
                "X-Accel-Buffering": {"description": "`no`: proxies pass each event on at once.",
                                      "schema": {"type": "string"}},
            },
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        "204": {"description": "`Last-Event-ID` is the end event's: the client has had everything."},
        "404": _answer("No such task (error `task_not_found`).", refs[schemas.Error]),
        "422": _answer("`Last-Event-ID` is not a whole number (error `validation_error`).",
                       refs[schemas.ValidationFailedError]),
        **_task_responses(refs, secured),
    }
    return {
        "tags": ["tasks"],
        "operationId": "task_events",
        "summary": "Follow a task as Server-Sent Events",
        "security": _security(secured),
        "parameters": [
            {
                "name": LAST_EVENT_ID_HEADER,
                "in": "header",
                "required": False,
                "description": "The id of the last event a reconnecting client received.",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        ],
        "responses": dict(sorted(responses.items())),
    }


def _cancel_operation(refs: dict[type[BaseModel], dict[str, str]], secured: bool) -> dict[str, Any]:
    responses = {
        "200": _answer(
            "Cancelled: taken off its queue, or stopped by its worker.",
            refs[schemas.CancelledTask],
            links=_task_links("get_task", "cancel_task", "retry_task"),
        ),
        "404": _answer("No such task (error `task_not_found`).", refs[schemas.Error]),
        "409": _answer(
            "The task has already ended; `status` says how (error `task_already_ended`).",
            refs[schemas.TaskAlreadyEndedError],
        ),
        **_task_responses(refs, secured),
    }
    return {
        "tags": ["tasks"],
        "operationId": "cancel_task",
        "summary": "Cancel a waiting or running task",
        "security": _security(secured),
        "responses": dict(sorted(responses.items())),
    }


def _retry_operation(refs: dict[type[BaseModel], dict[str, str]], secured: bool) -> dict[str, Any]:
    responses = {
        "202": _answer(
            "Back on its queue, under the same id.",
            refs[schemas.Task],
            {**_location(), **_rate_limit_headers()},
            _task_links("get_task", "cancel_task"),
        ),
        "404": _answer("No such task (error `task_not_found`).", refs[schemas.Error]),
        "409": _answer(
            "Only a failed or cancelled task can be retried (error `task_not_retryable`).",
            refs[schemas.TaskNotRetryableError],
        ),
        **_task_responses(refs, secured, enqueues=True),
    }
    return {
        "tags": ["tasks"],
        "operationId": "retry_task",
        "summary": "Retry a failed or cancelled task",
        "security": _security(secured),
        "responses": dict(sorted(responses.items())),
    }


def _running_operation(refs: dict[type[BaseModel], dict[str, str]], secured: bool) -> dict[str, Any]:
    responses = {
        "200": _answer("The tasks running now, on every queue.", refs[schemas.RunningTasks]),
        **_task_responses(refs, secured),
    }
    return {
        "tags": ["tasks"],
        "operationId": "list_running_tasks",
        "summary": "List the tasks running now",
        "security": _security(secured),
        "responses": dict(sorted(responses.items())),
    }


def _health_operation(refs: dict[type[BaseModel], dict[str, str]]) -> dict[str, Any]:
    return {
        "tags": ["service"],
        "operationId": "health",
        "summary": "Is every part of the service answering?",
        "description": "Open: needs no API key.",
        "responses": {
            "200": _answer("Redis and the database answer.", refs[schemas.Health]),
            "503": _answer("Redis or the database does not answer; `failing` names it.", refs[schemas.Health]),
        },
    }


def _metrics_operation(refs: dict[type[BaseModel], dict[str, str]], secured: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": (
                "Prometheus' text format: queue depths and oldest job ages, tasks ended by type and outcome, "
                "task durations, workers by state, submissions by outcome."
            ),
            "content": {CONTENT_TYPE_PLAIN_0_0_4: {"schema": {"type": "string"}}},
        },
        "503": _answer(
            "Redis, which keeps the figures, is unreachable (error `queue_unavailable`); try again later.",
            refs[schemas.Error],
            _retry_after(),
        ),
    }
    if secured:
        responses["401"] = _answer("The bearer token is not METRICS_TOKEN (error `unauthorized`).", refs[schemas.Error])
    operation: dict[str, Any] = {
        "tags": ["service"],
        "operationId": "metrics",
        "summary": "Metrics for Prometheus",
        "description": (
            "Figures kept in Redis, so every web process answers with the same numbers. Needs "
            "'Authorization: Bearer <METRICS_TOKEN>' when that setting is set; open otherwise."
        ),
        "responses": dict(sorted(responses.items())),
    }
    if secured:
        operation["security"] = [{METRICS_SCHEME: []}]
    return operation


def _document_operation() -> dict[str, Any]:
    return {
        "tags": ["documentation"],
        "operationId": "openapi_document",
        "summary": "This OpenAPI document",
        "responses": {"200": {"description": "The OpenAPI 3.1 document.", "content": _json({"type": "object"})}},
    }


def _docs_operation() -> dict[str, Any]:
    return {
        "tags": ["documentation"],
        "operationId": "docs_page",
        "summary": "Interactive documentation (Swagger UI)",
        "responses": {
            "200": {"description": "An HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}}
        },
    }
