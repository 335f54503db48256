"""`GET /metrics` in Prometheus' text format, and the count of every submission's answer.

The figures live in Redis (`trustcard.metrics`), so any web process answers a scrape with
the same numbers. With `METRICS_TOKEN` set a scrape needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import functools
import hmac
import logging

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from redis.exceptions import RedisError

from trustcard.api.operations import Answer, Guard, Operation, Raises, documented
from trustcard.exceptions import QueueUnavailable, Unauthorized
from trustcard.metrics import store
from trustcard.metrics.collector import metrics_registry
from trustcard.metrics.outcomes import submission_outcome

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

SUBMIT_ENDPOINT = "tasks.submit"
"""`POST /tasks/<job type route>`; a retry (`tasks.retry`) is not a submission."""
BATCH_ENDPOINT = "task_batch.submit_batch"
"""`POST /tasks/batch`: each of its tasks counts as a submission (`g.submission_tasks`)."""
METRICS_GUARD = Guard(
    "metricsToken",
    "The METRICS_TOKEN setting. When it is set, GET /metrics needs "
    "'Authorization: Bearer <METRICS_TOKEN>'; when it is not, it is open.",
    lambda settings: settings.metrics_token is not None,
    "The bearer token is not METRICS_TOKEN",
    optional_when_off=False,
)
"""`_require_token`, as the OpenAPI document declares it."""


def init_app(app: Flask) -> None:
    """Serve `/metrics` from this app's Redis, and count the answer to every submission.

    The count is an app-level hook filtered to the submit endpoint, not a hook added to the
    tasks blueprint: a module-level blueprint takes no new hook once some app registered it,
    and every test builds apps of its own.
    """
    app.extensions["trustcard.metrics"] = metrics_registry(app.extensions["trustcard.redis"])
    app.register_blueprint(bp)
    app.after_request(count_submission)


@bp.get("/metrics")
@documented(
    Operation(
        "metrics",
        "Metrics for Prometheus",
        "service",
        {
            200: Answer(
                "Prometheus' text format: queue depths and oldest job ages, tasks ended by type and outcome, "
                "task durations, workers by state, submissions by outcome.",
                {"type": "string"},
                media_type=CONTENT_TYPE_PLAIN_0_0_4,
            )
        },
        description="Figures kept in Redis, so every web process answers with the same numbers. Needs "
        "'Authorization: Bearer <METRICS_TOKEN>' when that setting is set; open otherwise.",
        raises=(Raises(QueueUnavailable, "Redis, which keeps the figures, is unreachable"),),
        guard=METRICS_GUARD,
    )
)
def metrics() -> Response:
    _require_token()
    try:
        body = generate_latest(current_app.extensions["trustcard.metrics"])
    except RedisError as error:
        log.warning("metrics: Redis error while reading them (%s)", error)
        raise QueueUnavailable("The metrics are kept in Redis, which is unreachable; try again shortly.") from None
    return Response(body, status=200, content_type=CONTENT_TYPE_PLAIN_0_0_4, headers={"Cache-Control": "no-store"})


def _require_token() -> None:
    expected: str | None = current_app.config["TRUSTCARD_SETTINGS"].metrics_token
    if not expected:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Unauthorized("GET /metrics needs the header 'Authorization: Bearer <METRICS_TOKEN>'.")


def count_submission(response: Response) -> Response:
    """`after_request`: count a submission by its answer, unless the Redis call that decided it
    counted it already (an accepted task in its enqueue transaction, a refusal in the rate
    limit's script: the common answers cost no extra round trip). The others are written once
    the answer has been sent (when the server closes the response); it never changes or fails
    the answer."""
    if request.endpoint not in (SUBMIT_ENDPOINT, BATCH_ENDPOINT) or g.get("submission_counted"):
        return response  # accepted and rate-limited answers were counted in their own Redis call
    try:
        error_code = None
        if response.status_code == 503 and response.is_json:
            body = response.get_json(silent=True)
            error_code = body.get("error") if isinstance(body, dict) else None
        outcome = submission_outcome(response.status_code, error_code)
        if outcome is not None:
            redis = current_app.extensions["trustcard.redis"]
            tasks = g.get("submission_tasks", 1)  # a batch's tasks, once its body was read
            response.call_on_close(functools.partial(store.count_submission, redis, outcome, tasks))
    except Exception:  # noqa: BLE001 - counting must never turn an answer into a 500
        log.exception("metrics: could not count a submission's answer")
    return response
