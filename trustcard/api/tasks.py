"""The task endpoints of the HTTP contract: thin views over the task service."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, url_for

from trustcard.api.auth import require_api_key
from trustcard.api.requests import task_parameters
from trustcard.catalogue import find_by_route
from trustcard.exceptions import UnknownJobType
from trustcard.tasks import TaskService

bp = Blueprint("tasks", __name__, url_prefix="/tasks")
bp.before_request(require_api_key)


def _service() -> TaskService:
    service: TaskService = current_app.extensions["trustcard.tasks"]
    return service


@bp.post("/<path:job_route>")
def submit(job_route: str) -> tuple[Response, int, dict[str, str]]:
    job_type = find_by_route(job_route)
    if job_type is None:
        raise UnknownJobType(f"There is no task type at /tasks/{job_route}.")
    task = _service().submit(job_type.name, task_parameters())
    body = {**task.to_dict(), "status": "submitted"}
    location = url_for("tasks.status", task_id=task.task_id)
    return jsonify(body), 202, {"Location": location}


@bp.get("/<task_id>")
def status(task_id: str) -> Response:
    return jsonify(_service().get(task_id).to_dict())


@bp.delete("/<task_id>")
def cancel(task_id: str) -> Response:
    task = _service().cancel(task_id)
    return jsonify({"task_id": task.task_id, "status": task.status, "error": task.error})


@bp.get("/")
def running() -> Response:
    tasks = [task.to_dict() for task in _service().running()]
    return jsonify({"tasks": tasks, "count": len(tasks)})
