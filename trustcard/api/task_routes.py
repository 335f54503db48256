"""The task endpoints of the HTTP contract: thin views over the task service."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context, url_for

from trustcard.api.auth import client_identity, request_id, require_api_key
from trustcard.api.event_hub import EventHub
from trustcard.api.job_routes import post_only_at_job_routes
from trustcard.api.ratelimit import add_rate_limit_headers, limit_submissions
from trustcard.api.request_body import task_parameters
from trustcard.api.task_stream import (
    LAST_EVENT_ID_HEADER,
    STREAM_HEADERS,
    TaskStream,
    has_ended,
    last_event_id,
    preferred_wait,
    wait_for_end,
    wait_seconds,
)
from trustcard.callback_urls import CALLBACK_HEADER
from trustcard.catalogue import find_by_route
from trustcard.exceptions import BadRequest, UnknownJobType
from trustcard.task_service import TaskService

bp = Blueprint("tasks", __name__, url_prefix="/tasks")
bp.before_request(require_api_key)
bp.before_request(limit_submissions)
bp.after_request(add_rate_limit_headers)

IDEMPOTENCY_HEADER = "Idempotency-Key"
PREFER_HEADER = "Prefer"
MAX_IDEMPOTENCY_KEY_LENGTH = 255


def _service() -> TaskService:
    service: TaskService = current_app.extensions["trustcard.task_service"]
    return service


@bp.post("/<path:job_route>")
def submit(job_route: str) -> tuple[Response, int, dict[str, str]]:
    job_type = find_by_route(job_route)
    if job_type is None:
        raise UnknownJobType(f"There is no task type at /tasks/{job_route}.")
    submission = _service().submit(
        job_type.name,
        task_parameters(),
        _idempotency_key(),
        submitted_by=client_identity(),
        request_id=request_id(),
        callback_url=request.headers.get(CALLBACK_HEADER),
    )
    task = submission.task
    body = {**task.to_dict(), "status": "submitted"}
    headers = {"Location": url_for("tasks.status", task_id=task.task_id)}
    if submission.replayed:
        headers["Idempotent-Replayed"] = "true"
    else:
        g.submission_counted = True  # in the enqueue transaction (trustcard.api.metrics)
    wait = preferred_wait(request.headers.get(PREFER_HEADER))
    if wait is not None:  # submit and learn the end in one round trip; old clients never ask
        headers["Preference-Applied"] = f"wait={wait:g}"
        ended = wait_for_end(_service(), _event_hub(), task.task_id, wait)
        if has_ended(ended):
            return jsonify(ended.to_dict()), 200, headers
    return jsonify(body), 202, headers


def _idempotency_key() -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise BadRequest(
            f"The {IDEMPOTENCY_HEADER} header must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters.",
            parameter=IDEMPOTENCY_HEADER,
        )
    return key


@bp.get("/<path:task_id>")  # an id with "/" is an unknown task (404), not another route
@post_only_at_job_routes
def status(task_id: str) -> Response:
    wait = wait_seconds(request.args.get("wait"))
    if wait is None:  # what old clients call: one read, as always
        return jsonify(_service().get(task_id).to_dict())
    return jsonify(wait_for_end(_service(), _event_hub(), task_id, wait).to_dict())


@bp.get("/<task_id>/events")
def events(task_id: str) -> Response:
    """Server-Sent Events: the state at once, each progress write, the end; then it closes."""
    settings = current_app.config["TRUSTCARD_SETTINGS"]
    after = last_event_id(request.headers.get(LAST_EVENT_ID_HEADER))
    stream = TaskStream(_service(), _event_hub(), task_id, after, settings.events_heartbeat_seconds)
    if stream.already_delivered:
        stream.close()
        return Response(status=204, headers=STREAM_HEADERS)
    response = Response(
        stream_with_context(stream.events()), mimetype="text/event-stream", headers=STREAM_HEADERS
    )
    response.call_on_close(stream.close)  # also when the body was never iterated
    return response


def _event_hub() -> EventHub:
    hub: EventHub = current_app.extensions["trustcard.events"]
    return hub


@bp.delete("/<path:task_id>")
@post_only_at_job_routes
def cancel(task_id: str) -> Response:
    task = _service().cancel(task_id)
    return jsonify({"task_id": task.task_id, "status": task.status, "error": task.error})


@bp.post("/<task_id>/retry")
def retry(task_id: str) -> tuple[Response, int, dict[str, str]]:
    task = _service().retry(task_id)
    return jsonify(task.to_dict()), 202, {"Location": url_for("tasks.status", task_id=task.task_id)}


@bp.get("/")
def running() -> Response:
    tasks = [task.to_dict() for task in _service().running()]
    return jsonify({"tasks": tasks, "count": len(tasks)})
