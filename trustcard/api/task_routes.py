"""The task endpoints of the HTTP contract: thin views over the task service."""

from __future__ import annotations

import time
import uuid
from contextlib import nullcontext
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request, stream_with_context, url_for

from trustcard.api import schemas
from trustcard.admission import Admission
from trustcard.api.auth import API_KEY_GUARD, client_identity, rate_limit_key, request_id, require_api_key
from trustcard.api.event_hub import EventHub
from trustcard.api.job_routes import post_only_at_job_routes
from trustcard.api.operations import Answer, Header, Operation, Parameter, Raises, documented
from trustcard.api.ratelimit import add_rate_limit_headers, limit_submissions
from trustcard.api.request_body import task_parameters
from trustcard.api.task_stream import (
    LAST_EVENT_ID_HEADER,
    LAST_EVENT_ID_PARAMETER,
    STREAM_HEADERS,
    WAIT_PARAMETER,
    TaskStream,
    has_ended,
    last_event_id,
    preferred_wait,
    wait_for_end,
    wait_on,
    wait_seconds,
)
from trustcard.callback_urls import CALLBACK_HEADER, MAX_URL_LENGTH
from trustcard.catalogue import JobType, find_by_route
from trustcard.exceptions import (
    BadRequest,
    IdempotencyKeyReused,
    PayloadTooLarge,
    QueueFull,
    QueueNotReplicated,
    QueueUnavailable,
    RateLimited,
    TaskAlreadyEnded,
    TaskNotFound,
    TaskNotRetryable,
    UnknownJobType,
    ValidationFailed,
)
from trustcard.task_events import watch_for
from trustcard.task_service import TASK_ID_PATTERN, TaskService

bp = Blueprint("tasks", __name__, url_prefix="/tasks")
bp.before_request(require_api_key)
bp.before_request(limit_submissions)
bp.after_request(add_rate_limit_headers)

IDEMPOTENCY_HEADER = "Idempotency-Key"
PREFER_HEADER = "Prefer"
MAX_IDEMPOTENCY_KEY_LENGTH = 255

TASK_ID = Parameter(
    "task_id", "path", "The id from the submit answer.", {"type": "string", "pattern": TASK_ID_PATTERN.pattern},
    required=True,
)
LOCATION = Header("The task's URL, to poll for its status.", {"type": "string"})
NO_SUCH_TASK = Raises(TaskNotFound, "No such task")
IDEMPOTENCY_KEY = Parameter(
    IDEMPOTENCY_HEADER,
    "header",
    "Any unique text: the same key again, within the result lifetime, answers with the first task "
    "instead of queuing another. The same key with other parameters is refused (409).",
    {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH},
)
CALLBACK_URL = Parameter(
    CALLBACK_HEADER,
    "header",
    "An http(s) URL: when the task ends (completed, failed or cancelled), its final view (as GET "
    "/tasks/{task_id} answers it) is POSTed there as JSON, with the header `TrustCard-Signature: "
    "t=<unix time>,v1=<hex HMAC-SHA256 of \"<t>.<body>\" with WEBHOOK_SECRET>`. A 2xx answer is a "
    "delivery; anything else, a redirect or no answer within 15 s is retried with back-off (first "
    "within 5 s, for about a day); the task's `callback` shows each attempt. Refused with 422 when "
    "the server has no WEBHOOK_SECRET, for credentials in the URL, over 2,048 characters, and for a "
    "host that resolves to a loopback, private, link-local (metadata) or other non-public address.",
    {"type": "string", "format": "uri", "maxLength": MAX_URL_LENGTH},
)
PREFER = Parameter(
    PREFER_HEADER,
    "header",
    "`wait=N` (RFC 7240): hold the answer up to N seconds (at most 25) for the task to end; if it does, "
    "the answer is 200 with its final view, so a quick task costs one round trip. A preference that "
    "cannot be read is ignored.",
    {"type": "string"},
    example="wait=10",
)


def submit_operation(job_type: JobType) -> Operation:
    """`POST /tasks/<route>` for one job type: its parameters are its model's fields."""
    return Operation(
        f"submit_{job_type.name.replace('.', '_')}",
        f"Submit {job_type.name}",
        "tasks",
        {
            200: Answer(
                "Sent with `Prefer: wait=N`, and the task ended within those N seconds: its final view, as "
                "GET /tasks/{task_id} answers it (status completed, failed or cancelled).",
                schemas.Task,
                headers={
                    "Location": LOCATION,
                    "Preference-Applied": Header(
                        "`wait=N`: the wait that was applied.", {"type": "string"}, required=False
                    ),
                },
            ),
            202: Answer(
                "Accepted and queued (with `Prefer: wait=N`: and not ended within N seconds).",
                schemas.SubmittedTask,
                headers={
                    "Location": LOCATION,
                    "Idempotent-Replayed": Header(
                        f"'true' when this is the earlier task with the same {IDEMPOTENCY_HEADER}.",
                        {"type": "string", "enum": ["true"]},
                        required=False,
                    ),
                },
                links=("get_task", "cancel_task"),
            ),
        },
        description=(
            f"{job_type.summary}\n\nQueue `{job_type.queue}`. Parameters go in the query string or in a "
            "JSON object body (`Content-Type: application/json`), each parameter once; together they must "
            f"satisfy `{job_type.params.__name__}`."
        ),
        query_model=job_type.params,
        parameters=(IDEMPOTENCY_KEY, CALLBACK_URL, PREFER),
        body=job_type.params,
        body_description="The parameters as a JSON object, instead of (or as well as) the query string.",
        raises=(
            Raises(
                BadRequest,
                f"The body is not a JSON object, a parameter is given twice, or the {IDEMPOTENCY_HEADER} "
                f"is not 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters",
            ),
            IdempotencyKeyReused,
            PayloadTooLarge,
            Raises(ValidationFailed, "A parameter is missing, unknown, of the wrong type or out of range, or "
                   "the Callback-URL is refused: one entry per bad parameter"),
            QueueUnavailable,
            QueueNotReplicated,
            QueueFull,
        ),
        guard=API_KEY_GUARD,
        rate_limited=True,
    )


def _service() -> TaskService:
    service: TaskService = current_app.extensions["trustcard.task_service"]
    return service


@bp.post("/<path:job_route>")
@documented(submit_operation)
def submit(job_route: str) -> tuple[Response, int, dict[str, str]]:
    job_type = find_by_route(job_route)
    if job_type is None:
        raise UnknownJobType(f"There is no task type at /tasks/{job_route}.")
    wait = preferred_wait(request.headers.get(PREFER_HEADER))
    job_id = str(uuid.uuid4())
    # With `Prefer: wait`, the waiter registers before the enqueue: no end can be missed, and
    # the task just enqueued needs no read before the wait (a 503 then comes before it too).
    # The rate limit is taken in the enqueue's call, and a waiting submission's watch set there.
    admission = Admission(rate_limit_key(), watch=(job_id, watch_for(wait)) if wait is not None else None)
    with _event_hub().waiting(job_id) if wait is not None else nullcontext() as waiter:
        try:
            submission = _service().submit(
                job_type.name,
                task_parameters(),
                _idempotency_key(),
                submitted_by=client_identity(),
                request_id=request_id(),
                callback_url=request.headers.get(CALLBACK_HEADER),
                admission=admission,
                job_id=job_id,
            )
        except RateLimited:
            g.submission_counted = True  # as rate_limited, in the same script (trustcard.api.metrics)
            raise
        finally:
            g.rate_limit = admission.bucket  # the RateLimit-* headers (trustcard.api.ratelimit)
        task = submission.task
        body = {**task.to_dict(), "status": "submitted"}
        headers = {"Location": url_for("tasks.status", task_id=task.task_id)}
        if submission.replayed:
            headers["Idempotent-Replayed"] = "true"
        else:
            g.submission_counted = True  # in the enqueue transaction (trustcard.api.metrics)
        if waiter is not None and wait is not None:  # the end in one round trip; old clients never ask
            headers["Preference-Applied"] = f"wait={wait:g}"
            if submission.replayed:  # an earlier task, which this waiter does not follow
                ended = wait_for_end(_service(), _event_hub(), task.task_id, wait)
            else:
                ended = wait_on(_service(), waiter, task, time.monotonic() + wait)
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
@documented(
    Operation(
        "get_task",
        "Read a task",
        "tasks",
        {200: Answer("The task's status, result, error and progress.", schemas.Task)},
        description="With `wait=N`, a long poll: answers as soon as the task ends, else after N seconds with its "
        "state then. Without it, at once.",
        parameters=(TASK_ID, WAIT_PARAMETER),
        raises=(TaskNotFound, Raises(ValidationFailed, "`wait` is not a number of seconds in (0, 25]"), QueueUnavailable),
        guard=API_KEY_GUARD,
    )
)
@post_only_at_job_routes
def status(task_id: str) -> Response:
    wait = wait_seconds(request.args.get("wait"))
    if wait is None:  # what old clients call: one read, as always
        return jsonify(_service().get(task_id).to_dict())
    return jsonify(wait_for_end(_service(), _event_hub(), task_id, wait).to_dict())


# One event of the stream, as OpenAPI 3.1 describes the items of `text/event-stream` (its `schema`
# is each event, not the whole stream); `data` is JSON text.
SERVER_SENT_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["state", "progress", "end"]},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "required": ["event", "data", "id"],
}

@bp.get("/<task_id>/events")
@documented(
    Operation(
        "task_events",
        "Follow a task as Server-Sent Events",
        "tasks",
        {
            200: Answer(
                "Server-Sent Events, until the task ends. `event: state` (the task, as GET /tasks/{task_id} "
                "answers it) at once; `event: progress` (the progress object) each time the job reports "
                "progress; `event: end` (the task's final view), then the stream closes. A comment "
                "(`: keep-alive`) every EVENTS_HEARTBEAT_SECONDS (15). Every event has an `id:`: progress "
                "writes are numbered 1, 2, ...; `state` carries the number of the last one it includes, `end` "
                "the number after the last one. Reconnecting with `Last-Event-ID` sends what came after it.",
                SERVER_SENT_EVENT,
                media_type="text/event-stream",
                headers={
                    "Cache-Control": Header("`no-cache`.", {"type": "string"}, required=False),
                    "X-Accel-Buffering": Header(
                        "`no`: proxies pass each event on at once.", {"type": "string"}, required=False
                    ),
                },
            ),
            204: Answer("`Last-Event-ID` is the end event's: the client has had everything."),
        },
        parameters=(TASK_ID, LAST_EVENT_ID_PARAMETER),
        raises=(
            NO_SUCH_TASK,
            Raises(ValidationFailed, f"`{LAST_EVENT_ID_HEADER}` is not a whole number"),
            QueueUnavailable,
        ),
        guard=API_KEY_GUARD,
    )
)
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
@documented(
    Operation(
        "cancel_task",
        "Cancel a waiting or running task",
        "tasks",
        {
            200: Answer(
                "Cancelled: taken off its queue, or stopped by its worker.",
                schemas.CancelledTask,
                links=("get_task", "cancel_task", "retry_task"),
            )
        },
        parameters=(TASK_ID,),
        raises=(NO_SUCH_TASK, TaskAlreadyEnded, QueueUnavailable),
        guard=API_KEY_GUARD,
    )
)
@post_only_at_job_routes
def cancel(task_id: str) -> Response:
    task = _service().cancel(task_id)
    return jsonify({"task_id": task.task_id, "status": task.status, "error": task.error})


@bp.post("/<task_id>/retry")
@documented(
    Operation(
        "retry_task",
        "Retry a failed or cancelled task",
        "tasks",
        {
            202: Answer(
                "Back on its queue, under the same id.",
                schemas.Task,
                headers={"Location": LOCATION},
                links=("get_task", "cancel_task"),
            )
        },
        parameters=(TASK_ID,),
        raises=(NO_SUCH_TASK, TaskNotRetryable, QueueUnavailable),
        guard=API_KEY_GUARD,
        rate_limited=True,
    )
)
def retry(task_id: str) -> tuple[Response, int, dict[str, str]]:
    task = _service().retry(task_id)
    return jsonify(task.to_dict()), 202, {"Location": url_for("tasks.status", task_id=task.task_id)}


@bp.get("/")
@documented(
    Operation(
        "list_running_tasks",
        "List the tasks running now",
        "tasks",
        {200: Answer("The tasks running now, on every queue.", schemas.RunningTasks)},
        raises=(QueueUnavailable,),
        guard=API_KEY_GUARD,
    )
)
def running() -> Response:
    tasks = [task.to_dict() for task in _service().running()]
    return jsonify({"tasks": tasks, "count": len(tasks)})
