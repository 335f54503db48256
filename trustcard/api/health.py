"""`GET /health`: is each part this service needs answering?"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from trustcard.api.operations import Answer, Operation, documented
from trustcard.api.schemas import Health
from trustcard.database import ping_database
from trustcard.exceptions import QueueUnavailable

bp = Blueprint("health", __name__)


@bp.get("/health")
@documented(
    Operation(
        "health",
        "Is every part of the service answering?",
        "service",
        {
            200: Answer("Redis and the database answer.", Health),
            503: Answer("Redis or the database does not answer; `failing` names it.", Health),
        },
        description="Open: needs no API key.",
    )
)
def health() -> tuple[Response, int]:
    service = current_app.extensions["trustcard.task_service"]
    body: dict[str, object] = {"status": "healthy"}
    database_problem = ping_database(current_app.extensions["trustcard.engine"])
    body["database"] = "connected" if database_problem is None else "unreachable"
    try:
        body["workers"] = service.worker_count()
        body["queues"] = service.queue_depths()
        body["redis"] = "connected"
    except QueueUnavailable:
        body.update(redis="unreachable", workers=None, queues=None)
    failing = [part for part in ("redis", "database") if body[part] != "connected"]
    if failing:
        body["status"] = "unhealthy"
        body["failing"] = failing
        return jsonify(body), 503
    return jsonify(body), 200
