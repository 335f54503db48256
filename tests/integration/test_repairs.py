"""Work left unfinished by a kill is finished, once, by real `rq worker` processes (issue 14).

Each test leaves Redis or the database as the kill would have (the moments between a take and a
start, or between a row's insert and its enqueue, are too short to hit from outside; the unit
tests cover the code paths one by one), or kills a real job process, then lets the Procfile's
worker (and, for an analysis whose first stage was never queued, the Procfile's web, by its
periodic check) repair it with nobody reading the task or the analysis through the API.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import pytest
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.worker import Worker
from sqlalchemy.orm import Session

from tests import stage_probes
from tests.integration.test_analyses import analysis_stack, post, probe_file  # noqa: F401 - fixture
from tests.support.stack import Stack, WebProcess
from tests.support.waiting import wait_until
from trustcard.analyses import records
from trustcard.analyses.stage_jobs import new_job_id
from trustcard.analyses.stages import stages
from trustcard.analyses.urls import parse_post_url
from trustcard.models import Analysis

pytestmark = pytest.mark.integration


def _row(stack: Stack, analysis_id: str) -> Analysis:
    row = records.read(stack.app.extensions["trustcard.engine"], analysis_id)
    assert row is not None
    return row


def test_a_job_taken_by_a_worker_killed_before_its_start_runs_once(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    connection = stack.app.extensions["trustcard.redis"]
    task_id = stack.submit("/tasks/test/add?x=20&y=22")
    job = Job.fetch(task_id, connection=connection, serializer=JSONSerializer)
    queue_key = f"rq:queue:{job.origin}"
    # What a worker on several queues leaves when it is killed between its take and its start:
    assert connection.lmove(queue_key, f"{queue_key}:intermediate") == task_id.encode()
    stack.start_worker()
    task = stack.wait_for(task_id, timeout=60)  # the worker's 15 s check, after a 10 s grace
    assert (task["status"], task["result"]) == ("completed", 42), task
    assert connection.llen(queue_key) == 0 and connection.llen(f"{queue_key}:intermediate") == 0
    [worker] = Worker.all(connection=connection)
    assert worker.successful_job_count == 1, "run once"


def test_an_analysis_stage_whose_job_process_is_killed_fails_without_a_reader(
    analysis_stack: Stack,  # noqa: F811
) -> None:
    worker = analysis_stack.start_worker()
    url, shortcode = post()
    probe_file("sleep", shortcode, "1.5")
    response = analysis_stack.client.post("/analyses", json={"url": url})
    assert response.status_code == 202
    analysis_id = response.get_json()["id"]
    wait_until(lambda: stage_probes.runs(shortcode) == 1, 30, "the probe stage to run")
    horse = wait_until(worker.horse, 5, "the job process")
    os.kill(horse, signal.SIGKILL)
    row = wait_until(lambda: (row := _row(analysis_stack, analysis_id)).status != "running" and row, 20,
                     "the analysis row to follow its stage job")
    assert (row.status, row.failed_stage) == ("failed", "probe"), (row.status, row.stages)
    probe = next(entry for entry in row.stages if entry["name"] == "probe")
    assert probe["status"] == "failed" and "SIGKILL" in probe["error"], probe
    assert stage_probes.runs(shortcode) == 1


def test_an_analysis_the_web_never_queued_is_queued_once_without_a_reader(
    analysis_stack: Stack, start_web: Callable[[dict[str, str]], WebProcess]  # noqa: F811
) -> None:
    """Queued by the periodic check of the Procfile's web (gunicorn), which nobody sends a request:
    the worker only runs the stages."""
    engine = analysis_stack.app.extensions["trustcard.engine"]
    url, shortcode = post()
    parsed = parse_post_url(url)
    entries: list[dict[str, Any]] = records.new_stage_entries(stages())
    entries[0]["job_id"] = new_job_id()
    now = records.utcnow()
    analysis_id = new_job_id()
    with Session(engine) as session, session.begin():  # the web's insert; it died before the enqueue
        session.add(Analysis(id=analysis_id, url=parsed.url, shortcode=parsed.shortcode, status="pending",
                             stages=entries, created_at=now, updated_at=now))
    start_web(analysis_stack.env)
    analysis_stack.start_worker()
    row = wait_until(lambda: (row := _row(analysis_stack, analysis_id)).status == "completed" and row, 60,
                     "the analysis to be queued and run")
    assert [entry["runs"] for entry in row.stages] == [1] * len(row.stages)
    assert stage_probes.runs(shortcode) == 1
    connection = analysis_stack.app.extensions["trustcard.redis"]
    assert Job.fetch(str(entries[0]["job_id"]), connection=connection,
                     serializer=JSONSerializer).get_status() == JobStatus.FINISHED


def test_the_blocking_wait_on_several_queues_keeps_a_trace_and_puts_back_a_second_take(clean_redis: Any) -> None:
    """Real Redis (fakeredis has no sockets to wait on): one BLMOVE per queue; two queues that
    both answer give one job, and the other goes back to the front of its queue once the
    first one's start is sent (or by the next call), never on no list meanwhile."""
    from rq import Queue

    from workers.job import CatalogueJob
    from workers.supervisor.bookkeeping import Bookkeeper, CommandBatch

    queues = [Queue(name, connection=clean_redis, serializer=JSONSerializer, job_class=CatalogueJob)
              for name in ("webhooks", "analysis", "models", "ingest")]
    book = Bookkeeper(clean_redis, queues, CatalogueJob, JSONSerializer)
    assert book.prepare_wait() > 0
    assert book.wait(queues, 0.2) is None
    first = queues[1].enqueue_call("workers.diagnostics.add", kwargs={"x": 1, "y": 1})
    second = queues[3].enqueue_call("workers.diagnostics.add", kwargs={"x": 2, "y": 2})
    found = book.wait(queues, 1)
    assert found is not None and found.job.id in (first.id, second.id)
    other = second if found.job.id == first.id else first
    assert clean_redis.lrange(found.queue.intermediate_queue_key, 0, -1) == [found.job.id.encode()]
    other_queue = next(queue for queue in queues if queue.name == other.origin)
    traces = other_queue.get_job_ids() + [i.decode() for i in clean_redis.lrange(other_queue.intermediate_queue_key, 0, -1)]
    assert traces == [other.id]
    book.receive(book.send(CommandBatch()))  # the first job's start sent: the other waits read
    assert other_queue.get_job_ids() == [other.id]
    assert clean_redis.llen(other_queue.intermediate_queue_key) == 0
    book._drop_waiting_connection()
