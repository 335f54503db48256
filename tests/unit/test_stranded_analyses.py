"""An analysis whose next stage was never queued (its enqueuer died) is queued once: on read and
by the workers' check. On fakeredis and SQLite."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import fakeredis
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlalchemy.orm import Session

from tests.unit.test_analyses import POST, app, client, read, redis, work  # noqa: F401 - fixtures
from trustcard.analyses import records, stranded
from trustcard.analyses.stage_jobs import claim, new_job_id
from trustcard.analyses.stages import stages
from trustcard.analyses.stranded import GRACE_SECONDS, StrandedCheck
from trustcard.analyses.urls import parse_post_url
from trustcard.models import Analysis


def _inserted_and_never_queued(engine: Any) -> str:
    """What the web writes before it enqueues the first stage, then dies."""
    parsed = parse_post_url(POST)
    entries = records.new_stage_entries(stages())
    entries[0]["job_id"] = new_job_id()
    now = records.utcnow()
    analysis_id = new_job_id()
    with Session(engine) as session, session.begin():
        session.add(Analysis(id=analysis_id, url=parsed.url, shortcode=parsed.shortcode, status="pending",
                             stages=entries, created_at=now, updated_at=now))
    return analysis_id


def _age(engine: Any, analysis_id: str, seconds: float) -> None:
    """As if the row had been written `seconds` ago."""
    with Session(engine) as session, session.begin():
        row = session.get(Analysis, analysis_id)
        assert row is not None
        row.updated_at = records.utcnow() - timedelta(seconds=seconds)


def _queued_ids(redis: fakeredis.FakeRedis) -> list[str]:  # noqa: F811
    return [job_id for name in ("ingest", "models", "analysis")
            for job_id in Queue(name, connection=redis, serializer=JSONSerializer).get_job_ids()]


def test_an_analysis_the_web_never_queued_is_queued_on_read_after_the_grace_once(
    client: FlaskClient, app: Flask, redis: fakeredis.FakeRedis  # noqa: F811
) -> None:
    engine = app.extensions["trustcard.engine"]
    analysis_id = _inserted_and_never_queued(engine)
    assert read(client, analysis_id)["status"] == "pending"
    assert _queued_ids(redis) == [], "queued within the grace: the web may be enqueueing it now"
    _age(engine, analysis_id, GRACE_SECONDS + 1)
    first_job = str(records.read(engine, analysis_id).stages[0]["job_id"])  # type: ignore[union-attr]
    for _ in range(3):  # readers one after another (and at once: see the claim's test)
        assert read(client, analysis_id)["status"] == "pending"
    assert _queued_ids(redis) == [first_job]
    work(redis)
    assert read(client, analysis_id)["status"] == "completed"


def test_of_two_claimers_of_a_stage_job_one_enqueues_it(redis: fakeredis.FakeRedis) -> None:  # noqa: F811
    job_id = new_job_id()
    assert claim(redis, job_id) is True
    assert claim(redis, job_id) is False
    other = new_job_id()
    redis.hset(Job.key_for(other), "status", "queued")
    assert claim(redis, other) is False, "a job already in Redis is never enqueued again"


def test_the_workers_check_queues_a_never_queued_analysis_nobody_reads(
    app: Flask, redis: fakeredis.FakeRedis  # noqa: F811
) -> None:
    engine = app.extensions["trustcard.engine"]
    analysis_id = _inserted_and_never_queued(engine)
    check = StrandedCheck()
    assert check.run(engine, redis, result_ttl=600, failure_ttl=600) == []  # within the grace
    _age(engine, analysis_id, GRACE_SECONDS + 1)
    assert check.run(engine, redis, result_ttl=600, failure_ttl=600) == [analysis_id]
    assert check.run(engine, redis, result_ttl=600, failure_ttl=600) == []
    assert len(_queued_ids(redis)) == 1


def test_the_workers_check_hands_on_a_stage_that_stored_its_output_and_died_before_handing_on(
    client: FlaskClient, app: Flask, redis: fakeredis.FakeRedis  # noqa: F811
) -> None:
    engine = app.extensions["trustcard.engine"]
    analysis_id = _inserted_and_never_queued(engine)

    def stored_without_hand_off(row: Any, entries: records.StageEntries) -> str:
        row.status = "running"
        entries[0].update(status="completed", output={"caption": "stored"})
        entries[1]["job_id"] = new_job_id()
        return str(entries[1]["job_id"])

    next_job = records.change(engine, analysis_id, stored_without_hand_off)
    _age(engine, analysis_id, GRACE_SECONDS + 1)
    assert StrandedCheck().run(engine, redis, result_ttl=600, failure_ttl=600) == [analysis_id]
    assert _queued_ids(redis) == [next_job]
    work(redis)
    ended = read(client, analysis_id)
    assert ended["status"] == "completed" and ended["stages"][0]["output"] == {"caption": "stored"}


def test_the_check_goes_through_many_rows_a_batch_at_a_time(
    app: Flask, redis: fakeredis.FakeRedis, monkeypatch: Any  # noqa: F811
) -> None:
    engine = app.extensions["trustcard.engine"]
    monkeypatch.setattr(stranded, "CHECK_BATCH", 2)
    ids = []
    for index in range(5):
        parsed = parse_post_url(f"https://www.instagram.com/p/Cx{index}/")
        entries = records.new_stage_entries(stages())
        entries[0]["job_id"] = new_job_id()
        old = records.utcnow() - timedelta(seconds=GRACE_SECONDS + 1 + index)
        analysis_id = new_job_id()
        with Session(engine) as session, session.begin():
            session.add(Analysis(id=analysis_id, url=parsed.url, shortcode=parsed.shortcode, status="pending",
                                 stages=entries, created_at=old, updated_at=old))
        ids.append(analysis_id)
    check = StrandedCheck()
    queued = [check.run(engine, redis, result_ttl=600, failure_ttl=600) for _ in range(3)]
    assert [len(batch) for batch in queued] == [2, 2, 1]
    assert sorted(sum(queued, [])) == sorted(ids)
