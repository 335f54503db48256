"""The HTTP contract end to end: real `rq worker` processes, real Redis and PostgreSQL.

Most tests share one stack (`stack`, from conftest: one worker from the Procfile's line, on
a redis-server of its own); those that need other settings build their own. The worker
keeps one job process for many jobs: the tests also check that it keeps every promise of
a forking worker (the soft limit inside the job, a job process killed and replaced, a
running job stopped, recycling after its share of jobs, RQ's own tools seeing it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rq import Queue, Worker
from rq.serializers import JSONSerializer
from sqlalchemy import text

from tests.support.paths import BIN
from tests.support.stack import Stack
from tests.support.waiting import wait_until
from trustcard.catalogue import QUEUE_NAMES
from workers.stages import STAGE_NAMES

pytestmark = pytest.mark.integration

MAX_JOBS_PER_CHILD = 5
"""`WORKER_MAX_JOBS_PER_CHILD` for the recycling test only (the default, 1,000, would make it
submit a thousand tasks to see one replacement)."""


def test_add_by_query_and_by_json_body(stack: Stack) -> None:
    response = stack.client.post("/tasks/test/add?x=7&y=8")
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "submitted" and response.headers["Location"] == f"/tasks/{body['task_id']}"
    done = stack.wait_for(body["task_id"])
    assert (done["status"], done["result"], done["error"]) == ("completed", 15, None)
    assert done["started_at"] and done["ended_at"] and done["worker"]

    by_json = stack.client.post("/tasks/test/add", json={"x": 7, "y": 8})
    assert by_json.status_code == 202 and by_json.get_json()["status"] == "submitted"
    assert by_json.headers["Location"] == f"/tasks/{by_json.get_json()['task_id']}"
    json_result = stack.wait_for(by_json.get_json()["task_id"])["result"]
    assert json_result == 15 and isinstance(json_result, int)  # 15, as the old service answered, not 15.0
    assert stack.wait_for(stack.submit("/tasks/test/add", json={"x": 2.5, "y": -1}))["result"] == 1.5

    log = stack.workers[0].log()  # one line a person can follow per received and succeeded job
    assert f"task {body['task_id']} received: test.add" in log
    assert re.search(rf"task {body['task_id']} succeeded in \d+\.\d{{3}} s: 15", log)


def test_worker_log_lines_carry_the_request_id_and_client_of_their_task(stack: Stack) -> None:
    request_id = "router-given-id-0123456789"
    task_id = stack.submit("/tasks/test/add?x=2&y=3", headers={"X-Request-Id": request_id})
    assert stack.wait_for(task_id)["result"] == 5

    def task_lines() -> list[str]:
        return [line for line in stack.workers[0].log().splitlines() if f"task {task_id} " in line]

    # The success is logged just after it is stored: the result can be read a moment earlier.
    lines = wait_until(lambda: len(found := task_lines()) >= 2 and found, 10, "the worker to log the success")
    assert len(lines) == 2, lines  # received, succeeded
    assert all(f"[task_id={task_id} request_id={request_id} client=127.0.0.1] " in line for line in lines), lines


def test_log_format_json_setting_makes_every_worker_line_a_json_object(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(LOG_FORMAT="json")
    worker = stack.start_worker()
    request_id = "router-given-id-9876543210"
    task_id = stack.submit("/tasks/test/add?x=2&y=3", headers={"X-Request-Id": request_id})
    assert stack.wait_for(task_id)["result"] == 5

    def task_entries() -> list[dict[str, str]]:
        entries = [json.loads(line) for line in worker.log().splitlines()]  # every line, RQ's start-up included
        return [entry for entry in entries if entry["task_id"] == task_id]

    # The success is logged just after it is stored: the result can be read a moment earlier.
    mine = wait_until(lambda: len(found := task_entries()) >= 2 and found, 10, "the worker to log the success",
                      ignore=(ValueError,))  # a line half written as it is read
    assert len(mine) == 2, mine
    assert mine[0]["message"] == f"task {task_id} received: test.add"
    assert mine[1]["message"].startswith(f"task {task_id} succeeded in ") and mine[1]["message"].endswith(": 5")
    assert {(entry["request_id"], entry["client"]) for entry in mine} == {(request_id, "127.0.0.1")}


def test_sleep_answers_like_the_old_service(stack: Stack) -> None:
    started = time.monotonic()
    task = stack.wait_for(stack.submit("/tasks/test/sleep?seconds=2"))
    assert task["result"] == "Slept for 2 seconds"
    assert time.monotonic() - started >= 2


def test_long_task_reports_rising_progress_then_the_exact_result(stack: Stack) -> None:
    task_id = stack.submit("/tasks/test/long")
    seen: list[int] = []
    while (task := stack.task(task_id))["status"] not in ("completed", "failed"):
        progress = task["progress"]
        if task["status"] == "started" and progress:
            assert progress["stage"] in STAGE_NAMES
            seen.append(progress["percent"])
        time.sleep(0.25)
    assert task["status"] == "completed"
    assert task["result"] == {"status": "completed", "progress": list(STAGE_NAMES), "percent": 100}
    assert seen == sorted(seen) and len(set(seen)) >= 4 and 0 <= seen[0] < 100


def test_process_post_runs_the_placeholder_pipeline_and_keeps_the_outcome(stack: Stack) -> None:
    url = "https://www.instagram.com/p/C0dE1/"
    task = stack.wait_for(stack.submit("/tasks/analysis/process_post", json={"url": url}))
    assert task["status"] == "completed", task
    assert task["result"]["trust_score"] is None and task["result"]["placeholder"] is True
    with stack.app.extensions["trustcard.engine"].connect() as connection:
        row = connection.execute(
            text("SELECT url, trust_score FROM post_analyses WHERE task_id = :id"), {"id": task["task_id"]}
        ).one()
    assert tuple(row) == (url, None)


def test_cancel_waiting_and_running_tasks(stack: Stack) -> None:
    running = stack.submit("/tasks/test/sleep?seconds=30")
    stack.wait_for(running, ("started",))
    waiting = stack.submit("/tasks/test/add?x=1&y=1")

    cancelled_waiting = stack.client.delete(f"/tasks/{waiting}")
    assert cancelled_waiting.status_code == 200 and cancelled_waiting.get_json()["status"] == "cancelled"
    listed = stack.client.get("/tasks/").get_json()
    assert [task["task_id"] for task in listed["tasks"]] == [running] and listed["count"] == 1
    assert listed["tasks"][0]["name"] == "test.sleep" and listed["tasks"][0]["worker"]

    running_in = stack.workers[0].horse()
    assert running_in is not None
    cancelled_running = stack.client.delete(f"/tasks/{running}")
    assert cancelled_running.status_code == 200 and cancelled_running.get_json()["status"] == "cancelled"
    assert stack.wait_for(running, ("cancelled",), timeout=5)["error"] == "Cancelled on request."
    assert rq_status(stack, running) == "stopped"  # RQ's status for a job stopped while running
    # The worker is free again: a new task completes, and the cancelled ones never ran.
    assert stack.wait_for(stack.submit("/tasks/test/add?x=2&y=2"))["result"] == 4
    assert stack.workers[0].horse() != running_in  # the job process that ran it was stopped
    assert stack.task(running)["status"] == "cancelled"
    never_ran = stack.task(waiting)
    assert never_ran["status"] == "cancelled" and never_ran["result"] is None
    assert never_ran["started_at"] is None and never_ran["worker"] is None
    assert f"task {waiting} received" not in stack.workers[0].log()

    assert stack.client.delete(f"/tasks/{running}").status_code == 409
    assert stack.client.get("/tasks/").get_json()["count"] == 0


def rq_status(stack: Stack, task_id: str) -> str:
    """The job's status as RQ stores it (the API maps `stopped` to `cancelled`)."""
    return (stack.app.extensions["trustcard.redis"].hget(f"rq:job:{task_id}", "status") or b"").decode()


def test_cancelling_an_ended_task_is_409_and_unknown_is_404(stack: Stack) -> None:
    done = stack.wait_for(stack.submit("/tasks/test/add?x=1&y=1"))
    response = stack.client.delete(f"/tasks/{done['task_id']}")
    assert response.status_code == 409
    assert response.get_json() | {"message": ""} == {
        "error": "task_already_ended", "status": "completed", "message": ""
    }
    assert stack.client.delete("/tasks/does-not-exist").status_code == 404
    assert stack.client.get("/tasks/does-not-exist").status_code == 404


def test_a_raising_job_fails_with_one_line_after_its_retry(stack: Stack) -> None:
    task_id = stack.submit("/tasks/test/fail", json={"message": "bad data in post"})
    task = stack.wait_for(task_id, ("failed",), timeout=30)
    assert task["error"] == "workers.diagnostics.DeliberateFailure: bad data in post"
    log = stack.workers[0].log()
    assert log.count(f"task {task_id} received") == 2  # the catalogue gives it one retry
    assert f"task {task_id} failed: workers.diagnostics.DeliberateFailure: bad data in post" in log
    assert "Traceback" in log and "DeliberateFailure: bad data in post" in log

    assert stack.client.post(f"/tasks/{task_id}/retry").status_code == 202
    assert stack.wait_for(task_id, ("failed",), timeout=30)["error"].endswith("bad data in post")
    assert stack.client.post(f"/tasks/{task_id}/retry").status_code == 202
    stack.wait_for(task_id, ("failed",), timeout=30)
    sleeping = stack.submit("/tasks/test/sleep?seconds=5")
    assert stack.client.post(f"/tasks/{sleeping}/retry").status_code == 409
    assert stack.client.delete(f"/tasks/{sleeping}").status_code == 200  # frees the worker for teardown


def test_workers_refuse_what_the_catalogue_does_not_name(stack: Stack, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    connection = stack.app.extensions["trustcard.redis"]
    queue = Queue("analysis", connection=connection, serializer=JSONSerializer)
    getcwd = queue.enqueue_call("os.getcwd")
    job = queue.enqueue_call("pathlib.Path.touch", args=[str(marker)], meta={"hard_timeout": 30})
    refused = stack.wait_for(getcwd.id, ("failed",))
    assert "Refused to run 'os.getcwd'" in refused["error"] and "\n" not in refused["error"]
    task = stack.wait_for(job.id, ("failed",))
    assert task["error"] == (
        "workers.job.JobNotCatalogued: Refused to run 'pathlib.Path.touch': "
        "workers run only the functions in the job catalogue."
    )
    assert not marker.exists()
    assert stack.wait_for(stack.submit("/tasks/test/add?x=1&y=2"))["result"] == 3


def test_a_pickled_job_is_not_run(stack: Stack) -> None:
    connection = stack.app.extensions["trustcard.redis"]
    pickled = Queue("analysis", connection=connection).enqueue_call("workers.diagnostics.add", kwargs={"x": 1, "y": 2})
    assert stack.wait_for(stack.submit("/tasks/test/add?x=1&y=3"))["result"] == 4  # the worker lives on
    assert stack.workers[0].process.poll() is None
    answer = stack.client.get(f"/tasks/{pickled.id}")
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["status"] == "failed" and answer.get_json()["result"] is None
    assert answer.get_json()["error"].startswith("UnreadableJob: the job was not stored as JSON")


BAD_INPUT = [
    # (path, test-client keyword arguments, expected status, text the message must contain)
    ("/tasks/test/add?x=1", {}, 422, "y"),
    ("/tasks/test/add", {"json": {"y": 1}}, 422, "x"),
    ("/tasks/test/add?x=nan&y=1", {}, 422, "x"),
    ("/tasks/test/add?x=1&y=inf", {}, 422, "y"),
    ("/tasks/test/add?x=seven&y=1", {}, 422, "x"),
    ("/tasks/test/add", {"json": {"x": True, "y": 1}}, 422, "x"),
    ("/tasks/test/add", {"json": {"x": 1, "y": None}}, 422, "y"),
    ("/tasks/test/add?x=1&y=2&z=3", {}, 422, "z"),
    ("/tasks/test/add", {"json": {"x": 1, "y": 2, "verbose": True}}, 422, "verbose"),
    ("/tasks/test/add?x=1&x=2&y=3", {}, 400, "x"),
    ("/tasks/test/add?x=1", {"json": {"x": 1, "y": 2}}, 400, "x"),
    ("/tasks/test/sleep?seconds=3601", {}, 422, "seconds"),
    ("/tasks/test/sleep?seconds=-1", {}, 422, "seconds"),
    ("/tasks/test/sleep", {"json": {"seconds": False}}, 422, "seconds"),
    ("/tasks/test/sleep", {"json": {"seconds": "NaN"}}, 422, "seconds"),
    ("/tasks/test/sleep", {}, 422, "seconds"),
    ("/tasks/analysis/process_post", {"json": {"url": "https://example.com/p/1/"}}, 422, "url"),
    ("/tasks/test/add", {"data": "{", "content_type": "application/json"}, 400, "JSON"),
    ("/tasks/test/add", {"data": "[7, 8]", "content_type": "application/json"}, 400, "object"),
    ("/tasks/test/add", {"data": '"x=7"', "content_type": "application/json"}, 400, "object"),
    ("/tasks/test/add", {"data": "x=7&y=8", "content_type": "text/plain"}, 400, "JSON"),
    ("/tasks/test/nothing", {}, 404, "test/nothing"),
]


@pytest.mark.parametrize(("path", "kwargs", "status", "named"), BAD_INPUT)
def test_bad_input_is_a_4xx_that_names_the_problem(
    make_stack: Callable[..., Stack], path: str, kwargs: dict[str, object], status: int, named: str
) -> None:
    stack = make_stack()  # no worker needed: nothing may reach the queue
    response = stack.client.post(path, **kwargs)
    body = response.get_json()
    assert response.status_code == status, body
    assert set(body) >= {"error", "message"} and named in body["message"], body
    assert "Traceback" not in body["message"]
    assert Queue("analysis", connection=stack.app.extensions["trustcard.redis"]).count == 0


def test_a_body_over_one_mebibyte_is_refused_with_413(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    body = b'{"x": 1, "y": 2, "pad": "' + b"a" * (1024 * 1024) + b'"}'
    response = stack.client.post("/tasks/test/add", data=body, content_type="application/json")
    assert response.status_code == 413, response.get_json()
    assert response.get_json()["error"] == "payload_too_large"
    assert Queue("analysis", connection=stack.app.extensions["trustcard.redis"]).count == 0


def test_health_with_postgresql_and_workers(stack: Stack, make_stack: Callable[..., Stack]) -> None:
    second = stack.start_worker()
    try:
        body = stack.client.get("/health").get_json()
        assert body["status"] == "healthy" and body["database"] == "connected" and body["redis"] == "connected"
        assert body["workers"] == 2
    finally:  # the stack is shared: it goes back to one worker
        second.stop()
        stack.workers.remove(second)
    assert second.poll() == 0
    assert stack.client.get("/health").get_json()["workers"] == 1  # a stopped worker unregisters

    broken = make_stack(DATABASE_URL="postgresql://postgres@127.0.0.1:1/nothing")
    started = time.monotonic()
    response = broken.client.get("/health")
    assert time.monotonic() - started < 3
    assert response.status_code == 503 and response.get_json()["failing"] == ["database"]


def test_rq_and_its_command_line_see_the_worker(stack: Stack) -> None:
    connection = stack.app.extensions["trustcard.redis"]
    workers = Worker.all(connection=connection, serializer=JSONSerializer)
    assert len(workers) == 1
    assert workers[0].pid == stack.workers[0].pid
    assert workers[0].queue_names() == list(QUEUE_NAMES)
    info = subprocess.run(
        [str(BIN / "rq"), "info", "--url", stack.settings.redis_url, "--only-workers"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert workers[0].name in info.stdout
    assert stack.client.get("/health").get_json()["workers"] == 1


def test_max_jobs_per_child_setting_jobs_complete_across_recycled_job_processes(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(WORKER_MAX_JOBS_PER_CHILD=str(MAX_JOBS_PER_CHILD))
    worker = stack.start_worker()
    first = wait_until(worker.horse, 5, "the worker's job process")
    count = 3 * MAX_JOBS_PER_CHILD + 2
    task_ids = [stack.submit("/tasks/test/add", json={"x": index, "y": 1000}) for index in range(count)]
    for index, task_id in enumerate(task_ids):
        task = stack.wait_for(task_id)
        assert (task["status"], task["result"]) == ("completed", index + 1000)
    assert worker.horse() not in (None, first)  # more jobs than one job process runs
    recycled = worker.log().count(f"recycled after {MAX_JOBS_PER_CHILD} jobs")
    assert recycled >= 3, recycled
    assert worker.poll() is None


def test_a_dependent_job_runs_once_its_dependency_succeeds(stack: Stack) -> None:
    """A success recorded by the long-lived job process still releases the jobs that wait on it."""
    connection = stack.app.extensions["trustcard.redis"]
    queue = Queue("analysis", connection=connection, serializer=JSONSerializer)
    first = queue.enqueue_call("workers.diagnostics.sleep", kwargs={"seconds": 0.5}, meta={"job_type": "test.sleep"})
    second = queue.enqueue_call(
        "workers.diagnostics.add", kwargs={"x": 2, "y": 3}, depends_on=first, meta={"job_type": "test.add"}
    )
    assert second.get_status() == "deferred"
    result = second.latest_result(timeout=30)
    assert result is not None and result.return_value == 5
    assert first.get_status() == "finished"


class TestTimeLimits:
    """On one stack of their own (a 3 s soft and a 5 s hard limit), shared by the class:
    the worker carries on after each test's job process was stopped or killed."""

    @pytest.fixture
    def limited(self, shared_stacks: Callable[..., Stack], process_logs: list[Path]) -> Stack:
        return shared_stacks(JOB_SOFT_TIMEOUT="3", JOB_TIMEOUT="5").for_test(process_logs)

    def test_soft_limit_fails_the_task_as_timed_out(self, limited: Stack) -> None:
        before = wait_until(limited.workers[0].horse, 5, "the job process")
        task = limited.wait_for(limited.submit("/tasks/test/sleep?seconds=10"))
        assert task["status"] == "failed"
        assert task["error"] == "Timed out: the job ran past its soft time limit of 3 s."
        assert "Traceback" not in task["error"] and "\n" not in task["error"]
        assert limited.wait_for(limited.submit("/tasks/test/add?x=1&y=1"))["result"] == 2
        assert limited.workers[0].horse() == before  # raised inside the job: its process carries on

    def test_long_task_records_the_stage_it_reached(self, limited: Stack) -> None:
        task = limited.wait_for(limited.submit("/tasks/test/long"))
        assert task["status"] == "failed" and task["error"].startswith("Timed out")
        assert task["progress"]["stage"] == STAGE_NAMES[1]  # three seconds: stage one done, stage two begun
        assert task["progress"]["stopped"] == "time limit reached"

    def test_hard_limit_kills_a_job_that_cannot_stop_itself(self, limited: Stack) -> None:
        """The soft limit is an alarm the job process handles itself; a process that cannot run
        (stopped here with SIGSTOP, as one stuck in a C call or swapped out would be) never
        handles it. Only the worker's own clock can end it: at the hard limit it kills the
        job process and fails the task with a reason that says so."""
        worker = limited.workers[0]
        task_id = limited.submit("/tasks/test/sleep?seconds=30")
        limited.wait_for(task_id, ("started",))
        horse = wait_until(worker.horse, 5, "the job process to appear")
        os.kill(horse, signal.SIGSTOP)  # it can no longer react to the soft limit's alarm
        started = time.monotonic()
        task = limited.wait_for(task_id, ("failed",), timeout=15)
        assert task["error"] == (
            "TimeLimitExceeded: the job ran past its hard time limit of 5 s and its process was killed."
        )
        assert time.monotonic() - started < 10
        assert "hard time limit of 5 s reached, killing it" in worker.log()
        wait_until(lambda: not Path(f"/proc/{horse}").exists(), 5, "the stopped job process to be gone")
        assert limited.wait_for(limited.submit("/tasks/test/add?x=1&y=1"))["result"] == 2
        wait_until(lambda: worker.horse() not in (None, horse), 10, "a fresh job process")

    def test_killed_job_process_fails_at_once_and_the_worker_goes_on(self, limited: Stack) -> None:
        worker = limited.workers[0]
        task_id = limited.submit("/tasks/test/sleep?seconds=30")
        limited.wait_for(task_id, ("started",))
        horse = wait_until(worker.horse, 5, "the job process to appear")
        os.kill(horse, signal.SIGKILL)  # as the out-of-memory killer would
        killed_at = time.monotonic()
        task = limited.wait_for(task_id, ("failed",), timeout=5)
        assert time.monotonic() - killed_at < 2
        assert "killed by signal 9" in task["error"]
        assert task["error"] == (
            "The job's process was killed by signal 9 (SIGKILL, for example by the out-of-memory killer)."
        )
        assert worker.poll() is None
        assert limited.wait_for(limited.submit("/tasks/test/add?x=1&y=1"))["result"] == 2
