"""`POST /tasks/batch`: up to 1,000 tasks of any job types in one request, all or nothing.

A thin view, as the single submission's (`trustcard.api.task_routes`): read the body,
check every task (`trustcard.task_batch`), take one token per task from the client's
bucket, enqueue them all in one transaction. Its own blueprint, so the single
submission's hooks (one token per request) do not run for it; the static rule
`/tasks/batch` wins over `/tasks/<path:job_route>`.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from trustcard.api.auth import API_KEY_GUARD, client_identity, request_id, require_api_key
from trustcard.api.batch_schemas import BatchRequest, SubmittedBatch
from trustcard.api.job_routes import BATCH_ROUTE
from trustcard.api.operations import Answer, Header, Operation, Parameter, Raises, documented
from trustcard.api.ratelimit import add_rate_limit_headers, limit_batch
from trustcard.api.task_routes import CALLBACK_URL, IDEMPOTENCY_HEADER, IDEMPOTENCY_KEY
from trustcard.api.task_routes import _idempotency_key as idempotency_key  # the single path's own check
from trustcard.callback_urls import CALLBACK_HEADER
from trustcard.exceptions import (
    BadRequest,
    IdempotencyKeyReused,
    PayloadTooLarge,
    QueueFull,
    QueueNotReplicated,
    QueueUnavailable,
    ValidationFailed,
)
from trustcard.task_batch import MAX_BATCH_TASKS, validate_batch
from trustcard.task_service import TaskService

bp = Blueprint("task_batch", __name__, url_prefix="/tasks")
bp.before_request(require_api_key)
bp.after_request(add_rate_limit_headers)

BATCH_IDEMPOTENCY_KEY = Parameter(
    IDEMPOTENCY_HEADER,
    "header",
    "Any unique text, naming the whole batch: the same key again with the same body, within the result "
    "lifetime, answers with the first batch's tasks instead of queuing others. The same key with another body "
    "(or one used for a single submission) is refused (409).",
    IDEMPOTENCY_KEY.schema,
)

SUBMIT_BATCH = Operation(
    "submit_batch",
    "Submit a batch of tasks",
    "tasks",
    {
        202: Answer(
            "Every task accepted and queued, in the order given: each as GET /tasks/{task_id} answers it "
            "(status pending).",
            SubmittedBatch,
            headers={
                "Idempotent-Replayed": Header(
                    f"'true' when these are the earlier batch's tasks with the same {IDEMPOTENCY_HEADER}.",
                    {"type": "string", "enum": ["true"]},
                    required=False,
                ),
            },
        ),
    },
    description=(
        f"Up to {MAX_BATCH_TASKS:,} tasks of any job types, checked all together: one bad task refuses the whole "
        "batch (422, each problem named by the task's index, e.g. `tasks[3].params.x`) and nothing is queued. "
        "Accepted tasks are queued in one Redis transaction, in the order given. Each task counts against the "
        "client's rate limit (a batch needs as many tokens as it has tasks; with fewer left, 429 and nothing "
        "queued) and against MAX_QUEUE_DEPTH. The `Idempotency-Key` names the whole batch. A `Callback-URL` "
        "applies to every task: each task's end is POSTed there on its own. `Prefer: wait` is not taken here."
    ),
    parameters=(BATCH_IDEMPOTENCY_KEY, CALLBACK_URL),
    body=BatchRequest,
    body_description="The tasks, as `{\"tasks\": [{\"type\": \"test.add\", \"params\": {\"x\": 1, \"y\": 2}}]}`.",
    raises=(
        Raises(
            BadRequest,
            f"The body is not a JSON object, or the {IDEMPOTENCY_HEADER} is not 1 to 255 characters",
        ),
        IdempotencyKeyReused,
        PayloadTooLarge,
        Raises(
            ValidationFailed,
            f"`tasks` is missing, not a list, empty or over {MAX_BATCH_TASKS:,} (or over RATE_LIMIT_BURST); a task "
            "is not an object, names no catalogued type, or has a parameter missing, unknown, of the wrong type or "
            "out of range; or the Callback-URL is refused: one entry per problem, named like `tasks[3].params.x`",
        ),
        QueueUnavailable,
        QueueNotReplicated,
        Raises(QueueFull, "A queue would hold more than MAX_QUEUE_DEPTH waiting tasks with this batch's"),
    ),
    guard=API_KEY_GUARD,
    rate_limited=True,
)


@bp.post(f"/{BATCH_ROUTE}")
@documented(SUBMIT_BATCH)
def submit_batch() -> tuple[Response, int, dict[str, str]]:
    body = _batch_body()
    listed = body.get("tasks")
    g.submission_tasks = len(listed) if isinstance(listed, list) and listed else 1  # for /metrics, refused too
    tasks = validate_batch(body)
    key = idempotency_key()  # a bad one is refused before any token is taken
    limit_batch(len(tasks))
    service: TaskService = current_app.extensions["trustcard.task_service"]
    submission = service.submit_batch(
        tasks,
        key,
        submitted_by=client_identity(),
        request_id=request_id(),
        callback_url=request.headers.get(CALLBACK_HEADER),
    )
    headers = {}
    if submission.replayed:
        headers["Idempotent-Replayed"] = "true"
    else:
        g.submission_counted = True  # in the enqueue transaction
    return jsonify({"tasks": [task.to_dict() for task in submission.tasks]}), 202, headers


def _batch_body() -> dict[str, Any]:
    """The JSON object body; an empty one is `{}` (so 422 names the missing `tasks`)."""
    raw = request.get_data(cache=True)  # bounded by MAX_CONTENT_LENGTH
    if not raw.strip():
        return {}
    if not request.is_json:
        raise BadRequest("A batch must be JSON, sent with 'Content-Type: application/json'.")
    body = request.get_json(silent=True)
    if body is None:
        raise BadRequest("The request body is not valid JSON.")
    if not isinstance(body, dict):
        raise BadRequest(
            'The JSON body must be an object, like {"tasks": [{"type": "test.add", "params": {"x": 1, "y": 2}}]}.'
        )
    return body
