"""Tasks stored the lean way (a plain success's result in its job hash, no result stream),
read by everything that reads results: the API through gunicorn (GET, ?wait, the event
stream), rq-dashboard's job page and job JSON, `rq info`, RQ's own `Job` readers, with
retries (RQ's Retry, our retry endpoint) and dependencies. Real Procfile worker, real
gunicorn, a private redis-server."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from rq import Queue
from rq.job import Job
from rq.results import Result
from rq.serializers import JSONSerializer

from tests.support.http_connection import KeepAliveConnection
from tests.support.paths import BIN
from tests.support.stack import DASHBOARD_LOGIN, Stack, WebProcess
from tests.support.waiting import wait_until
from trustcard import job_results

pytestmark = pytest.mark.integration
ADD = "workers.diagnostics.add"
SLEEP = "workers.diagnostics.sleep"


class Lean:
    """The module's stack (dashboard login set, one worker), its gunicorn, and clients."""

    def __init__(self, stack: Stack, web: WebProcess) -> None:
        self.stack, self.web = stack, web
        self.redis = redis.Redis.from_url(stack.env["REDIS_URL"])
        self.api = KeepAliveConnection("127.0.0.1", web.port)
        login = base64.b64encode(":".join(DASHBOARD_LOGIN).encode()).decode()
        self.dashboard = KeepAliveConnection("127.0.0.1", web.port, headers={"Authorization": f"Basic {login}"})
        self.queue = Queue("analysis", connection=self.redis, serializer=JSONSerializer)

    def call(self, method: str, path: str, expect: int = 200) -> Any:
        status, body = self.api.request(method, path)
        assert status == expect, (method, path, status, body[:500])
        return json.loads(body)

    def submit(self, path: str) -> str:
        return str(self.call("POST", path, 202)["task_id"])

    def ended(self, task_id: str, timeout: float = 30) -> dict[str, Any]:
        return wait_until(lambda: (view := self.call("GET", f"/tasks/{task_id}?wait=5"))["status"]
                          in ("completed", "failed", "cancelled") and view, timeout, f"task {task_id} to end")

    def dashboard_json(self, task_id: str) -> dict[str, Any]:
        status, body = self.dashboard.request("GET", f"/rq/0/data/job/{task_id}.json")
        assert status == 200, body[:500]
        return dict(json.loads(body))

    def assert_lean(self, task_id: str) -> None:
        assert not self.redis.exists(Result.get_key(task_id)), "no result stream"
        assert self.redis.hexists(f"rq:job:{task_id}", job_results.RESULT_FIELD)


@pytest.fixture(scope="module")
def lean_stack(shared_stacks: Callable[..., Stack]) -> Iterator[Lean]:
    stack = shared_stacks(DASHBOARD_USERNAME=DASHBOARD_LOGIN[0], DASHBOARD_PASSWORD=DASHBOARD_LOGIN[1])
    web = WebProcess.start_web(stack.env, stack.log_dir)
    stack.logs.append(web.log_path)
    job_results.install()  # this process reads jobs through RQ's own Job API too
    lean = Lean(stack, web)
    try:
        yield lean
    finally:
        lean.api.close()
        lean.dashboard.close()
        lean.redis.close()
        web.kill()


@pytest.fixture
def lean(lean_stack: Lean, process_logs: list[Any]) -> Lean:
    lean_stack.stack.for_test(process_logs)
    return lean_stack


def test_a_finished_task_is_stored_lean_and_the_api_and_dashboard_read_it(lean: Lean) -> None:
    task_id = lean.submit("/tasks/test/add?x=7&y=8")
    view = lean.ended(task_id)
    assert (view["status"], view["result"], view["name"], view["error"]) == ("completed", 15, "test.add", None)
    lean.assert_lean(task_id)
    key = f"rq:job:{task_id}"
    assert lean.redis.object("encoding", key) in (b"listpack", b"ziplist"), "the compact encoding"
    assert lean.redis.memory_usage(key, samples=0) < 700
    assert 0 < lean.redis.ttl(key) <= 86_400  # RQ's result TTL, the default day

    status, body = lean.api.request("GET", f"/tasks/{task_id}/events")
    assert status == 200 and b"event: end" in body and b'"result":15' in body

    data = lean.dashboard_json(task_id)
    assert (data["result"], data["exc_info"], data["status"]) == (15, None, "finished")
    assert data["description"] == "workers.diagnostics.add(x=7, y=8)"
    status, page = lean.dashboard.request("GET", f"/rq/0/view/job/{task_id}")
    assert status == 200 and task_id.encode() in page
    status, listing = lean.dashboard.request("GET", "/rq/0/data/jobs/analysis/finished/50/asc/1.json")
    assert status == 200 and task_id in [job["id"] for job in json.loads(listing)["jobs"]]

    job = Job.fetch(task_id, connection=lean.redis, serializer=JSONSerializer)
    assert job.return_value() == 15 and job.latest_result().type == Result.Type.SUCCESSFUL


def test_rq_info_reads_a_redis_with_lean_tasks(lean: Lean) -> None:
    lean.ended(lean.submit("/tasks/test/add?x=1&y=1"))
    info = subprocess.run([str(BIN / "rq"), "info", "--url", lean.stack.env["REDIS_URL"],
                           "--serializer", "rq.serializers.JSONSerializer"],
                          capture_output=True, text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    assert "analysis" in info.stdout and "1 workers" in info.stdout, info.stdout


def test_a_failure_after_rqs_retry_keeps_its_exc_info_and_our_retry_endpoint_runs_it_again(lean: Lean) -> None:
    task_id = lean.submit("/tasks/test/fail?message=lean-check")
    view = lean.ended(task_id)
    assert view["status"] == "failed" and "lean-check" in view["error"]
    assert "lean-check" in lean.dashboard_json(task_id)["exc_info"]
    job = Job.fetch(task_id, connection=lean.redis, serializer=JSONSerializer)
    latest = job.latest_result()
    assert latest.type == Result.Type.FAILED and "lean-check" in latest.exc_string

    first_end = view["ended_at"]
    assert lean.call("POST", f"/tasks/{task_id}/retry", 202)["status"] in ("pending", "started", "failed")
    again = wait_until(lambda: (v := lean.call("GET", f"/tasks/{task_id}"))["status"] == "failed"
                       and v["ended_at"] != first_end and v, 30, "the retried task to fail again")
    assert "lean-check" in again["error"]


def test_a_cancelled_task_retried_completes_lean(lean: Lean) -> None:
    busy = lean.submit("/tasks/test/sleep?seconds=2")  # the one worker is busy: the next one waits
    wait_until(lambda: lean.call("GET", f"/tasks/{busy}")["status"] == "started", 30, "the sleep to start")
    task_id = lean.submit("/tasks/test/add?x=2&y=3")
    assert lean.call("DELETE", f"/tasks/{task_id}")["status"] == "cancelled"
    lean.call("POST", f"/tasks/{task_id}/retry", 202)
    view = lean.ended(task_id)
    assert (view["status"], view["result"]) == ("completed", 5)
    lean.assert_lean(task_id)
    assert lean.dashboard_json(task_id)["result"] == 5
    assert lean.ended(busy)["result"] == "Slept for 2 seconds"


def test_dependencies_are_released_and_both_results_read(lean: Lean) -> None:
    parent = lean.queue.enqueue_call(SLEEP, kwargs={"seconds": 1}, meta={"job_type": "test.sleep"})
    child = lean.queue.enqueue_call(ADD, kwargs={"x": 20, "y": 22}, depends_on=parent, meta={"job_type": "test.add"})
    assert lean.ended(child.id)["result"] == 42
    assert lean.call("GET", f"/tasks/{parent.id}")["result"] == "Slept for 1 seconds"
    lean.assert_lean(child.id)  # a job with dependents ends through RQ's own transaction (a stream)
    assert lean.redis.exists(Result.get_key(parent.id))
    assert lean.dashboard_json(child.id)["depends_on"] == [parent.id]
    assert lean.dashboard_json(parent.id)["result"] == "Slept for 1 seconds"
