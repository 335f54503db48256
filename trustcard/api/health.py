"""`GET /health`: is each part this service needs answering?"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from trustcard.database import ping_database
from trustcard.exceptions import QueueUnavailable

bp = Blueprint("health", __name__)


@bp.get("/health")
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
