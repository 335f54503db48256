"""The OpenAPI document and the /docs page: valid, complete, and true to the app.

Complete means every route the app serves is documented with its methods (the one
submit rule as one path per catalogued job type); true means the schemas come from the
models that validate requests, and real answers validate against the document.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import fakeredis
import jsonschema
import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate as validate_openapi
from werkzeug.datastructures import Headers
from werkzeug.routing import Rule

from trustcard.api import schemas
from trustcard.api.error_answers import error_model, exception_classes
from trustcard.api.openapi_document import build_document
from trustcard.api.operations import Answer, Operation, documented
from trustcard.api.auth import rate_limit_key
from trustcard.api.app import create_app
from trustcard.catalogue import JOB_TYPES
from trustcard.config import load_settings
from trustcard.exceptions import (
    PayloadTooLarge,
    QueueFull,
    RateLimited,
    TaskAlreadyEnded,
    ValidationFailed,
)
from trustcard.gunicorn_worker import REFUSAL_CODES
from trustcard.task_view import TaskView

API_KEY = "unit-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
AUTOMATIC_METHODS = {"HEAD", "OPTIONS"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@contextmanager
def make_app(tmp_path: Path, redis: fakeredis.FakeRedis | None = None, **env: str) -> Iterator[Flask]:
    settings = load_settings({"DATABASE_URL": f"sqlite:///{tmp_path / 'openapi.db'}", "SECRET_KEY": "unit", **env})
    app = create_app(settings, redis=redis)
    app.config["TESTING"] = True
    try:
        yield app
    finally:
        app.extensions["trustcard.engine"].dispose()


@pytest.fixture
def open_app(tmp_path: Path) -> Iterator[Flask]:
    """No API key, no Redis client given: only requests that need Redis would touch it."""
    with make_app(tmp_path) as app:
        yield app


@pytest.fixture
def keyed_app(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> Iterator[Flask]:
    with make_app(tmp_path, fake_redis, API_KEY=API_KEY) as app:
        yield app


@pytest.fixture
def keyed_client(keyed_app: Flask) -> FlaskClient:
    return keyed_app.test_client()


def document_of(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document: dict[str, Any] = response.get_json()
    return document


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield path, method, operation


def served_rules(app: Flask) -> Iterator[tuple[Rule, str]]:
    """Every (rule, method) the app answers, except static files and the /rq dashboard."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static") or rule.rule.startswith("/rq"):
            continue
        for method in sorted((rule.methods or set()) - AUTOMATIC_METHODS):
            yield rule, method


def sample_url(path: str) -> str:
    """A concrete URL for a documented path template: `{name}` becomes a sample value."""
    return re.sub(r"\{[^}/]+\}", "sample-id", path)


@pytest.mark.parametrize("env", [{}, {"API_KEY": API_KEY}], ids=["open", "api-key"])
def test_document_is_valid_openapi(tmp_path: Path, env: dict[str, str]) -> None:
    with make_app(tmp_path, **env) as app:
        document = document_of(app)
        validate_openapi(document)  # raises on any violation of the OpenAPI 3.1 schema
        assert document["openapi"].startswith("3.1")
        ids = [operation["operationId"] for _, _, operation in operations(document)]
        assert len(ids) == len(set(ids))


def test_every_served_route_is_documented_with_its_methods(open_app: Flask) -> None:
    document = document_of(open_app)
    adapter = open_app.url_map.bind("localhost")
    documented: set[tuple[str, str]] = set()
    for path, method, _ in operations(document):
        # A documented operation that no rule serves would be a lie; match() raises then.
        rule, _args = adapter.match(sample_url(path), method=method.upper(), return_rule=True)
        documented.add((rule.rule, method.upper()))
    served = {(rule.rule, method) for rule, method in served_rules(open_app)}
    assert served, "the app serves no routes?"
    assert served - documented == set(), "served but not in /openapi.json"
    assert ("/tasks/<path:job_route>", "POST") in served  # the dynamic submit rule is checked too


def test_every_catalogued_job_type_has_its_own_submit_path(open_app: Flask) -> None:
    document = document_of(open_app)
    adapter = open_app.url_map.bind("localhost")
    for job_type in JOB_TYPES:
        path = f"/tasks/{job_type.route}"
        assert "post" in document["paths"].get(path, {}), f"{job_type.name} is not documented at {path}"
        assert adapter.match(path, method="POST")[0] == "tasks.submit"
    assert {"/tasks/test/add", "/tasks/test/sleep", "/tasks/test/long", "/tasks/analysis/process_post"} <= set(
        document["paths"]
    )


def test_each_job_types_parameters_come_from_its_model(open_app: Flask) -> None:
    document = document_of(open_app)
    components = document["components"]["schemas"]
    for job_type in JOB_TYPES:
        operation = document["paths"][f"/tasks/{job_type.route}"]["post"]
        model_schema = job_type.params.model_json_schema()
        query = {parameter["name"]: parameter for parameter in operation["parameters"] if parameter["in"] == "query"}
        assert set(query) == set(job_type.params.model_fields) == set(model_schema["properties"])
        for name, parameter in query.items():
            assert parameter["in"] == "query"
            expected = {k: v for k, v in model_schema["properties"][name].items() if k not in ("title", "description")}
            assert parameter["schema"] == expected
        body_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        body = components[body_ref.rsplit("/", 1)[1]]
        assert body["properties"] == model_schema["properties"]
        assert body.get("required", []) == model_schema.get("required", [])
        assert body["additionalProperties"] is False  # unknown parameters are refused, as documented


def test_add_is_documented_as_the_contract_says(open_app: Flask) -> None:
    operation = document_of(open_app)["paths"]["/tasks/test/add"]["post"]
    parameters = [(p["name"], p["in"], p["schema"]["type"]) for p in operation["parameters"]]
    assert parameters == [
        ("x", "query", "number"),
        ("y", "query", "number"),
        ("Idempotency-Key", "header", "string"),
        ("Callback-URL", "header", "string"),
        ("Prefer", "header", "string"),
        ("X-Request-Id", "header", "string"),
    ]
    assert set(operation["responses"]) == {"200", "202", "400", "409", "413", "414", "422", "429", "431", "503"}
    assert operation["responses"]["202"]["headers"]["Location"]["required"] is True
    assert operation["responses"]["429"]["headers"]["Retry-After"]["required"] is True
    for status in ("200", "202", "429"):
        headers = operation["responses"][status]["headers"]
        for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
            assert headers[name]["required"] is True and headers[name]["schema"]["type"] == "integer", (status, name)


def test_every_exception_answers_as_its_generated_model_says(keyed_app: Flask) -> None:
    """The error models come from the exception classes; the answers come from the error
    handler. Each class's answer (with its example's details) fits its model, with its
    status and, when the class says so, Retry-After."""
    classes = list(exception_classes())
    assert {ValidationFailed, TaskAlreadyEnded, PayloadTooLarge, QueueFull} <= set(classes)
    for error_class in classes:
        raised = (
            RateLimited("slow down", retry_after_seconds=7)
            if error_class is RateLimited
            else error_class("It went wrong.", **error_class.example)
        )
        with keyed_app.test_request_context():
            answer = keyed_app.make_response(keyed_app.handle_user_exception(raised))
        assert answer.status_code == error_class.status_code, error_class
        body = answer.get_json()
        assert body["error"] == error_class.code and body["message"] == raised.message
        error_model(error_class).model_validate(body)
        assert ("Retry-After" in answer.headers) == (error_class.retry_after_seconds is not None), error_class


def test_every_error_example_fits_its_answer(tmp_path: Path) -> None:
    with make_app(tmp_path, API_KEY=API_KEY, METRICS_TOKEN="scrape") as app:
        document = document_of(app)
    seen = set()
    for path, method, operation in operations(document):
        for status, answer in operation["responses"].items():
            if int(status) < 400 or path == "/health":
                continue
            examples = answer["content"]["application/json"]["examples"]
            assert examples, f"{method} {path} {status}"
            for code, example in examples.items():
                assert example["value"]["error"] == code and f"`{code}`" in answer["description"]
                validate_against_document(document, path, method, int(status), example["value"])
                seen.add(code)
    assert {"unauthorized", "task_not_found", "validation_error", "queue_full", "rate_limited"} <= seen


def test_a_route_must_declare_its_path_parameters(tmp_path: Path) -> None:
    with make_app(tmp_path) as app:
        @app.get("/extra/<thing_id>")
        @documented(Operation("extra", "An extra route", "service", {200: Answer("Fine.")}))
        def extra(thing_id: str) -> str:
            return thing_id

        with pytest.raises(ValueError, match="path parameters"):
            build_document(app)


def test_every_error_answer_has_the_error_shape(open_app: Flask) -> None:
    document = document_of(open_app)
    components = document["components"]["schemas"]
    for path, method, operation in operations(document):
        for status, answer in operation["responses"].items():
            if int(status) < 400 or path == "/health":
                continue
            schema = answer["content"]["application/json"]["schema"]
            refs = [choice["$ref"] for choice in schema["anyOf"]] if "anyOf" in schema else [schema["$ref"]]
            for ref in refs:  # one model, or any of several (a 503 with details and one without)
                model = components[ref.rsplit("/", 1)[1]]
                assert {"error", "message"} <= set(model["required"]), f"{method} {path} {status} {ref}"


def test_bearer_scheme_guards_the_task_endpoints_only_when_api_key_is_set(tmp_path: Path) -> None:
    with make_app(tmp_path, API_KEY=API_KEY) as app:
        document = document_of(app)
        assert document["components"]["securitySchemes"]["bearerAuth"] == {
            "type": "http",
            "scheme": "bearer",
            "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
        }
        for path, method, operation in operations(document):
            if path.startswith(("/tasks", "/analyses")):
                assert operation["security"] == [{"bearerAuth": []}], f"{method} {path}"
                assert "401" in operation["responses"]
            else:
                assert "security" not in operation and "401" not in operation["responses"]
        client = app.test_client()
        assert client.get("/openapi.json").status_code == 200  # open, like /docs
        assert client.get("/docs").status_code == 200
        assert client.get("/tasks/").status_code == 401  # while the task endpoints are not
    with make_app(tmp_path) as app:
        for path, _, operation in operations(document_of(app)):
            if path.startswith("/tasks"):
                assert {} in operation["security"] and "401" not in operation["responses"]


class _AssetLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in ("src", "href") and value]


def test_docs_page_is_html_that_loads_only_local_assets(open_app: Flask) -> None:
    client = open_app.test_client()
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "SwaggerUIBundle" in html and '"/openapi.json"' in html
    assert "validatorUrl: null" in html  # the validator badge would call out to the internet
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.IGNORECASE), "page names a remote host"
    parser = _AssetLinks()
    parser.feed(html)
    assert any(link.endswith("swagger-ui-bundle.js") for link in parser.links)
    for link in parser.links:
        assert link.startswith("/") and not link.startswith("//"), link
        with client.get(link) as asset:
            assert asset.status_code == 200 and len(asset.data) > 100, link


def validate_against_document(document: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    """Validate an answer with the schema the document gives for it, `$ref`s resolved
    against the document itself."""
    answer = document["paths"][path][method]["responses"][str(status)]
    schema = {**answer["content"]["application/json"]["schema"], "components": document["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)


def validate_headers_against_document(
    document: dict[str, Any], path: str, method: str, status: int, headers: Headers
) -> None:
    """Every header the document requires on this answer is there and fits its schema."""
    documented = document["paths"][path][method]["responses"][str(status)].get("headers", {})
    for name, header in documented.items():
        if not header.get("required"):
            continue
        assert name in headers, f"{method} {path} {status} lacks {name}"
        value: Any = headers[name]
        if header["schema"].get("type") == "integer":
            assert re.fullmatch(r"\d+", value), f"{name}: {value!r}"
            value = int(value)
        jsonschema.Draft202012Validator(header["schema"]).validate(value)


def test_real_answers_match_the_document_and_the_models(keyed_client: FlaskClient, keyed_app: Flask) -> None:
    document = document_of(keyed_app)

    submitted = keyed_client.post("/tasks/test/add?x=7", json={"y": 8}, headers=AUTH)
    assert submitted.status_code == 202
    validate_against_document(document, "/tasks/test/add", "post", 202, submitted.get_json())
    validate_headers_against_document(document, "/tasks/test/add", "post", 202, submitted.headers)
    schemas.SubmittedTask.model_validate(submitted.get_json())
    task_id = submitted.get_json()["task_id"]

    status = keyed_client.get(f"/tasks/{task_id}", headers=AUTH)
    assert status.status_code == 200
    validate_against_document(document, "/tasks/{task_id}", "get", 200, status.get_json())
    assert schemas.Task.model_validate(status.get_json()).status == "pending"

    listed = keyed_client.get("/tasks/", headers=AUTH)
    assert listed.status_code == 200
    validate_against_document(document, "/tasks/", "get", 200, listed.get_json())

    cancelled = keyed_client.delete(f"/tasks/{task_id}", headers=AUTH)
    assert cancelled.status_code == 200
    validate_against_document(document, "/tasks/{task_id}", "delete", 200, cancelled.get_json())
    again = keyed_client.delete(f"/tasks/{task_id}", headers=AUTH)
    assert again.status_code == 409
    validate_against_document(document, "/tasks/{task_id}", "delete", 409, again.get_json())

    retried = keyed_client.post(f"/tasks/{task_id}/retry", headers=AUTH)
    assert retried.status_code == 202
    validate_against_document(document, "/tasks/{task_id}/retry", "post", 202, retried.get_json())
    validate_headers_against_document(document, "/tasks/{task_id}/retry", "post", 202, retried.headers)
    not_retryable = keyed_client.post(f"/tasks/{task_id}/retry", headers=AUTH)  # pending again
    assert not_retryable.status_code == 409
    validate_against_document(document, "/tasks/{task_id}/retry", "post", 409, not_retryable.get_json())

    key = {**AUTH, "Idempotency-Key": "unit-key"}
    first = keyed_client.post("/tasks/test/add?x=1&y=2", headers=key)
    replayed = keyed_client.post("/tasks/test/add?x=1&y=2", headers=key)
    assert replayed.status_code == 202 and replayed.headers.get("Idempotent-Replayed") == "true"
    assert replayed.get_json()["task_id"] == first.get_json()["task_id"]
    validate_against_document(document, "/tasks/test/add", "post", 202, replayed.get_json())
    reused = keyed_client.post("/tasks/test/add?x=1&y=3", headers=key)
    assert reused.status_code == 409
    validate_against_document(document, "/tasks/test/add", "post", 409, reused.get_json())

    errors = [
        (keyed_client.post("/tasks/test/sleep", json={"seconds": -1}, headers=AUTH), "/tasks/test/sleep", 422),
        (keyed_client.post("/tasks/test/add?x=1", json={"x": 1}, headers=AUTH), "/tasks/test/add", 400),
        (
            keyed_client.post("/tasks/test/long", data="[1]", content_type="application/json", headers=AUTH),
            "/tasks/test/long",
            400,
        ),
        (keyed_client.post("/tasks/test/long"), "/tasks/test/long", 401),
    ]
    for response, path, expected in errors:
        assert response.status_code == expected, response.get_json()
        validate_against_document(document, path, "post", expected, response.get_json())
        validate_headers_against_document(document, path, "post", expected, response.headers)
    missing = keyed_client.get("/tasks/a/b", headers=AUTH)
    assert missing.status_code == 404
    validate_against_document(document, "/tasks/{task_id}", "get", 404, missing.get_json())
    validate_headers_against_document(document, "/tasks/{task_id}", "get", 404, missing.headers)

    health = keyed_client.get("/health")
    validate_against_document(document, "/health", "get", health.status_code, health.get_json())
    validate_headers_against_document(document, "/health", "get", health.status_code, health.headers)
    schemas.Health.model_validate(health.get_json())

    metrics = keyed_client.get("/metrics")
    assert metrics.status_code == 200
    assert list(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == [metrics.content_type]
    validate_headers_against_document(document, "/metrics", "get", 200, metrics.headers)


def test_every_operation_documents_the_request_id_and_the_web_servers_refusals(open_app: Flask) -> None:
    document = document_of(open_app)
    refusal = document["components"]["schemas"]["RequestRefusedError"]
    assert set(refusal["properties"]["error"]["enum"]) == {REFUSAL_CODES[400], REFUSAL_CODES[414], REFUSAL_CODES[431]}
    for path, method, operation in operations(document):
        request_ids = [p for p in operation["parameters"] if p["name"] == "X-Request-Id"]
        assert len(request_ids) == 1 and request_ids[0]["in"] == "header" and not request_ids[0]["required"]
        assert {"400", "414", "431"} <= set(operation["responses"]), f"{method} {path}"
        for status, answer in operation["responses"].items():
            header = answer["headers"]["X-Request-Id"]
            assert header["required"] is True, f"{method} {path} {status}"
            validator = jsonschema.Draft202012Validator(header["schema"])
            assert validator.is_valid("a" * 20) and not validator.is_valid("a" * 19), f"{method} {path} {status}"
            assert not validator.is_valid("b" * 201) and not validator.is_valid("has space in it, twenty+")


def test_task_model_puts_submitted_by_after_worker(open_app: Flask) -> None:
    task = document_of(open_app)["components"]["schemas"]["Task"]
    names = list(task["properties"])
    assert names[names.index("worker") + 1] == "submitted_by"
    assert {"type": "null"} in task["properties"]["submitted_by"]["anyOf"]


def test_metrics_token_setting_secures_metrics_in_the_document(tmp_path: Path, fake_redis: fakeredis.FakeRedis) -> None:
    with make_app(tmp_path, fake_redis) as app:
        operation = document_of(app)["paths"]["/metrics"]["get"]
        assert "security" not in operation and "401" not in operation["responses"]
        assert app.test_client().get("/metrics").status_code == 200
    with make_app(tmp_path, fake_redis, METRICS_TOKEN="scrape-token-1") as app:
        document = document_of(app)
        operation = document["paths"]["/metrics"]["get"]
        assert operation["security"] == [{"metricsToken": []}]
        refused = app.test_client().get("/metrics", headers={"Authorization": "Bearer wrong"})
        assert refused.status_code == 401
        validate_against_document(document, "/metrics", "get", 401, refused.get_json())
        validate_headers_against_document(document, "/metrics", "get", 401, refused.headers)
        allowed = app.test_client().get("/metrics", headers={"Authorization": "Bearer scrape-token-1"})
        assert allowed.status_code == 200 and allowed.mimetype == "text/plain"


def test_rate_limit_per_minute_setting_answers_match_the_document(
    tmp_path: Path, fake_redis: fakeredis.FakeRedis
) -> None:
    """At one a minute the emptied bucket stays empty: the next submission is the
    documented 429, headers included, however slow the machine."""
    with make_app(tmp_path, fake_redis, RATE_LIMIT_PER_MINUTE="1") as app:
        document = document_of(app)
        client = app.test_client()
        accepted = client.post("/tasks/test/long")
        assert accepted.status_code == 202
        validate_headers_against_document(document, "/tasks/test/long", "post", 202, accepted.headers)
        with app.test_request_context(environ_base={"REMOTE_ADDR": "127.0.0.1"}):  # the test client's address
            bucket = rate_limit_key()
        remaining = int(accepted.headers["RateLimit-Remaining"])
        assert app.extensions["trustcard.ratelimiter"].take(bucket, cost=remaining).allowed
        limited = client.post("/tasks/test/long")
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        validate_against_document(document, "/tasks/test/long", "post", 429, limited.get_json())
        validate_headers_against_document(document, "/tasks/test/long", "post", 429, limited.headers)


def test_an_answer_that_breaks_the_document_is_caught(keyed_app: Flask) -> None:
    """The check above can fail: a task answer with a status outside the contract does."""
    document = document_of(keyed_app)
    bad = {field.name: None for field in dataclasses.fields(TaskView)}
    bad.update(task_id="x", queue="q", status="done")
    with pytest.raises(jsonschema.ValidationError):
        validate_against_document(document, "/tasks/{task_id}", "get", 200, bad)
