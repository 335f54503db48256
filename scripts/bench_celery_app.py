"""The Celery side of `scripts/bench.py`: one `add` task, configured like the old service.

Bench-only: nothing in the service imports it. The broker and result backend come from
`BENCH_CELERY_BROKER` and `BENCH_CELERY_BACKEND` (set by the bench before it starts the
worker), JSON is the only serializer, as in the Celery service this project replaced.
It also carries a two-endpoint WSGI app (`web`) with the shape of the project's task API,
so the bench can time Celery's round trip through HTTP served by the same gunicorn set-up.
"""

from __future__ import annotations

import json
import os
from typing import Any

from celery import Celery
from celery.result import AsyncResult

BROKER_URL = os.environ.get("BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/0")
BACKEND_URL = os.environ.get("BENCH_CELERY_BACKEND", "redis://127.0.0.1:6379/1")

app = Celery("bench_celery_app", broker=BROKER_URL, backend=BACKEND_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=86_400,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    task_default_queue="analysis",
)


@app.task(name="bench.add")
def add(x: float, y: float) -> float:
    return x + y


def _answer(start_response: Any, status: str, body: dict[str, Any]) -> list[bytes]:
    payload = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return [payload]


def web(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """`POST /tasks/test/add?x=..&y=..` -> 202 with a task id; `GET /tasks/<id>` -> its state."""
    path = environ.get("PATH_INFO", "")
    method = environ.get("REQUEST_METHOD", "GET")
    if method == "POST" and path == "/tasks/test/add":
        query = dict(part.split("=", 1) for part in environ.get("QUERY_STRING", "").split("&") if "=" in part)
        result = add.apply_async(kwargs={"x": float(query["x"]), "y": float(query["y"])})
        return _answer(start_response, "202 Accepted", {"task_id": result.id, "status": "submitted"})
    if method == "GET" and path.startswith("/tasks/"):
        result = AsyncResult(path.rsplit("/", 1)[-1], app=app)
        state = result.state
        status = {"SUCCESS": "completed", "FAILURE": "failed", "STARTED": "started"}.get(state, "pending")
        return _answer(
            start_response,
            "200 OK",
            {"task_id": result.id, "status": status, "result": result.result if state == "SUCCESS" else None},
        )
    return _answer(start_response, "404 Not Found", {"error": "not_found"})
