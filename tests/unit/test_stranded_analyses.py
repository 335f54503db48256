"""An analysis whose next stage was never queued (its enqueuer died) is queued once: on read and
by the web processes' periodic check. On fakeredis and SQLite."""

from __future__ import annotations

import logging
import runpy
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fakeredis
from flask import Flask
from flask.testing import FlaskClient
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from tests.support.waiting import wait_until
from tests.unit.test_analyses import POST, app, client, read, redis, work  # noqa: F401 - fixtures
from trustcard.analyses import records, stranded
from trustcard.analyses.stage_jobs import claim, new_job_id
from trustcard.analyses.stages import stages
from trustcard.analyses.stranded import GRACE_SECONDS, StrandedCheck
from trustcard.api import stranded_watch
from trustcard.api.stranded_watch import LOCK_NAME, StrandedWatch, start_in
from trustcard.analyses.urls import parse_post_url
from trustcard.models import Analysis
from trustcard.settling import settling


def _inserted_and_never_queued(engine: Any, url: str = POST) -> str:
    """What the web writes before it enqueues the first stage, then dies."""
    parsed = parse_post_url(url)
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


def _watch(app: Flask, redis: fakeredis.FakeRedis) -> StrandedWatch:  # noqa: F811
    return StrandedWatch(app.extensions["trustcard.engine"], redis, app.config["TRUSTCARD_SETTINGS"])


def _stranded(app: Flask, url: str = POST) -> str:  # noqa: F811
    """An analysis never queued, unchanged past the grace: the check's to queue."""
    engine = app.extensions["trustcard.engine"]
    analysis_id = _inserted_and_never_queued(engine, url)
    _age(engine, analysis_id, GRACE_SECONDS + 1)
    return analysis_id


def test_the_web_processes_check_queues_a_never_queued_analysis_once_and_one_process_at_a_time(
    app: Flask, redis: fakeredis.FakeRedis  # noqa: F811
) -> None:
    analysis_id = _stranded(app)
    watch = _watch(app, redis)
    with settling(redis, LOCK_NAME) as ours:  # another web process is running the check
        assert ours
        assert watch.run_once() == []
    assert _queued_ids(redis) == []
    assert watch.run_once() == [analysis_id]
    assert _watch(app, redis).run_once() == [], "a second process's check finds it queued"
    assert len(_queued_ids(redis)) == 1


def test_the_web_processes_check_skips_a_round_when_the_database_fails_and_says_so_once(
    app: Flask, redis: fakeredis.FakeRedis, caplog: Any  # noqa: F811
) -> None:
    watch = StrandedWatch(create_engine("sqlite:///file:missing?mode=ro&uri=true"), redis,
                          app.config["TRUSTCARD_SETTINGS"])
    with caplog.at_level(logging.WARNING, "trustcard.api.stranded_watch"):
        assert watch.run_once() == []
        assert watch.run_once() == []
    warned = [record.getMessage() for record in caplog.records
              if "stranded-analysis check skipped, the database failed" in record.getMessage()]
    assert len(warned) == 1, f"said once while it repeats: {caplog.text}"
    assert redis.keys("trustcard:settling:*") == [], "the lock is given back"


def test_the_web_processes_check_runs_in_its_own_thread_at_start_and_again(
    app: Flask, redis: fakeredis.FakeRedis  # noqa: F811
) -> None:
    _stranded(app)
    watch = _watch(app, redis)
    watch.start(interval=0.05)
    try:
        wait_until(lambda: len(_queued_ids(redis)) == 1, 10, "the check at start")
        _stranded(app, "https://www.instagram.com/p/Cx2/")
        wait_until(lambda: len(_queued_ids(redis)) == 2, 10, "the next round")
    finally:
        watch.stop()
    assert watch._thread is not None and not watch._thread.is_alive()


def test_a_worker_supervisors_periodic_checks_import_no_database_layer() -> None:
    """The supervisor stays lean (about 23 MB of SQLAlchemy and the models a worker, before
    this check moved to the web) and its loop never waits on a database: a fresh interpreter
    runs the Procfile's worker class's checks of abandoned tasks, first round and later ones."""
    code = (
        "import sys, fakeredis; from rq import Queue; from workers.supervisor import JobProcessSupervisor;"
        "r = fakeredis.FakeRedis(); w = JobProcessSupervisor([Queue('analysis', connection=r)], connection=r);"
        "[w._settle_abandoned() for _ in range(3)];"
        "print(sorted(m for m in ('sqlalchemy', 'trustcard.models') if m in sys.modules))"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[]", ran.stdout


def test_the_gunicorn_hook_starts_the_check_only_for_this_service_s_app(
    app: Flask, monkeypatch: Any  # noqa: F811
) -> None:
    """gunicorn.conf.py's `post_worker_init` also runs for the benchmark's Celery app, which
    has no analyses: that one is left alone (and the check's module not even imported)."""
    hooks = runpy.run_path(str(Path(__file__).resolve().parents[2] / "gunicorn.conf.py"))
    started: list[Flask] = []
    monkeypatch.setattr(stranded_watch, "start_in", started.append)
    hooks["post_worker_init"](SimpleNamespace(wsgi=lambda environ, start_response: []))
    assert started == []
    hooks["post_worker_init"](SimpleNamespace(wsgi=app))
    assert started == [app]


def test_the_check_started_in_an_app_is_kept_with_it(app: Flask) -> None:  # noqa: F811
    watch = start_in(app)
    try:
        assert app.extensions["trustcard.stranded_watch"] is watch
        assert watch._thread is not None and watch._thread.is_alive()
    finally:
        watch.stop()


def test_a_row_the_check_cannot_read_is_said_once_and_the_rows_after_it_are_still_checked(
    app: Flask, redis: fakeredis.FakeRedis, caplog: Any  # noqa: F811
) -> None:
    engine = app.extensions["trustcard.engine"]
    bad = _stranded(app, "https://www.instagram.com/p/Cx0bad/")
    with Session(engine) as session, session.begin():
        row = session.get(Analysis, bad)
        assert row is not None
        row.stages = [{"name": "content"}]  # no status: unreadable
        row.updated_at = records.utcnow() - timedelta(seconds=GRACE_SECONDS + 5)
    good = _stranded(app)
    watch = _watch(app, redis)
    with caplog.at_level(logging.WARNING):
        assert watch.run_once() == [good]
        assert watch.run_once() == []
    said = [record for record in caplog.records if bad in record.getMessage()]
    assert len(said) == 1 and said[0].exc_info is not None, caplog.text
