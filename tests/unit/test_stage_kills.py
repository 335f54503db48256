"""An analysis follows its stage job when the job process was killed before it could write the row.

On fakeredis and SQLite; the worker's methods that record a death are called directly, as the
supervisor calls them (the integration tests kill real job processes).
"""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from tests.unit.test_analyses import app, client, read, redis, submit  # noqa: F401 - fixtures
from trustcard import failures
from trustcard.analyses import records
from workers.supervisor.abandoned import settle_abandoned
from workers.supervisor import JobProcessSupervisor


@pytest.fixture
def worker(redis: fakeredis.FakeRedis) -> JobProcessSupervisor:  # noqa: F811
    queues = [Queue(name, connection=redis, serializer=JSONSerializer) for name in ("ingest", "models", "analysis")]
    return JobProcessSupervisor(queues, connection=redis, serializer=JSONSerializer)


def _started_first_stage(redis: fakeredis.FakeRedis, engine: Any, analysis_id: str,  # noqa: F811
                         worker: JobProcessSupervisor, *, marked: bool, retries_left: int) -> Job:
    """The first stage's job started by `worker`; `marked`: the stage marked begun in the row."""
    row = records.read(engine, analysis_id)
    assert row is not None
    job = Job.fetch(str(row.stages[0]["job_id"]), connection=redis, serializer=JSONSerializer)
    job.retries_left = retries_left
    job.save()
    Queue(job.origin, connection=redis, serializer=JSONSerializer).remove(job.id)
    with redis.pipeline() as pipeline:
        job.prepare_for_execution(worker.name, pipeline)
        pipeline.execute()
    if marked:
        def begin(locked: Any, entries: records.StageEntries) -> None:
            locked.status = "running"
            entries[0]["status"] = "running"

        records.change(engine, analysis_id, begin)
    return job


@pytest.mark.parametrize("marked", [False, True], ids=["before-the-stage-was-marked", "after"])
def test_a_stage_job_killed_with_no_retry_left_fails_the_analysis_without_a_reader(
    client: FlaskClient, app: Flask, redis: fakeredis.FakeRedis, worker: JobProcessSupervisor,  # noqa: F811
    marked: bool,
) -> None:
    analysis = submit(client)
    engine = app.extensions["trustcard.engine"]
    job = _started_first_stage(redis, engine, analysis["id"], worker, marked=marked, retries_left=0)
    queue = Queue(job.origin, connection=redis, serializer=JSONSerializer)
    worker.handle_job_failure(job, queue=queue, exc_string=failures.killed_text(9))  # as record_death does
    assert job.get_status(refresh=True) == JobStatus.FAILED
    row = records.read(engine, analysis["id"])  # the row itself: nobody read the analysis
    assert row is not None
    assert (row.status, row.failed_stage) == ("failed", "content")
    assert row.stages[0]["status"] == "failed" and "killed" in row.stages[0]["error"].lower()
    assert row.ended_at is not None


def test_a_stage_job_killed_with_a_retry_left_is_retried_and_the_row_waits_for_it(
    client: FlaskClient, app: Flask, redis: fakeredis.FakeRedis, worker: JobProcessSupervisor,  # noqa: F811
) -> None:
    analysis = submit(client)
    engine = app.extensions["trustcard.engine"]
    job = _started_first_stage(redis, engine, analysis["id"], worker, marked=True, retries_left=1)
    queue = Queue(job.origin, connection=redis, serializer=JSONSerializer)
    worker.handle_job_failure(job, queue=queue, exc_string=failures.killed_text(9))
    assert job.get_status(refresh=True) in (JobStatus.SCHEDULED, JobStatus.QUEUED)
    row = records.read(engine, analysis["id"])
    assert row is not None and row.status == "running" and row.stages[0]["status"] == "running"


def test_an_abandoned_stage_job_with_no_retry_left_fails_the_analysis(
    client: FlaskClient, app: Flask, redis: fakeredis.FakeRedis, worker: JobProcessSupervisor,  # noqa: F811
) -> None:
    analysis = submit(client)
    engine = app.extensions["trustcard.engine"]
    job = _started_first_stage(redis, engine, analysis["id"], worker, marked=False, retries_left=0)
    registry = StartedJobRegistry(job.origin, connection=redis, serializer=JSONSerializer)
    redis.zadd(registry.key, {f"{job.id}:execution-1": 1})  # its heartbeat long expired: its worker is gone
    assert "ingest" in settle_abandoned(worker)
    assert job.get_status(refresh=True) == JobStatus.FAILED
    row = records.read(engine, analysis["id"])
    assert row is not None and (row.status, row.failed_stage) == ("failed", "content")
    assert "Abandoned" in row.stages[0]["error"]


def test_a_stage_job_that_failed_before_its_stage_was_marked_fails_the_analysis_when_read(
    client: FlaskClient, app: Flask, redis: fakeredis.FakeRedis, worker: JobProcessSupervisor,  # noqa: F811
) -> None:
    """Failed by someone that does not follow the row (RQ's own maintenance pass, say)."""
    analysis = submit(client)
    engine = app.extensions["trustcard.engine"]
    job = _started_first_stage(redis, engine, analysis["id"], worker, marked=False, retries_left=0)
    with redis.pipeline() as pipeline:
        record_job_failure(job, failures.killed_text(9), pipeline)
        pipeline.execute()
    failed = read(client, analysis["id"])
    assert (failed["status"], failed["failed_stage"]) == ("failed", "content"), failed
    assert failed["stages"][0]["status"] == "failed"
