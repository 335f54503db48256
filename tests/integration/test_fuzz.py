"""Schemathesis against the app's own OpenAPI document, on a real Redis, at the default
settings (the rate limit included) with an API key, so that auth is checked too.

Every documented operation gets generated requests, valid and invalid ones, sent
through the WSGI app; then generated workflows follow the document's links (submit,
then read, cancel or retry that task). No worker runs, so submitted jobs just wait on
their queue. What is checked, and which checks are left out and why: tests/support/fuzzing.py,
shared with scripts/fuzz.py, which runs the same over HTTP against gunicorn and a worker.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from redis import Redis

from tests.support.fuzzing import EXCLUDED_CHECKS, StatusLog, check_submission, config, hypothesis_settings, workflow_machine
from tests.support.stack import REDIS_URL
from tests.support.migrations import upgrade
from trustcard.api.app import create_app
from trustcard.config import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]  # a generated `Prefer: wait=N` may wait 25 s

API_KEY = "fuzz-test-key"
MAX_EXAMPLES = 50
"""Per operation and phase: about 900 requests in all, some seconds on a quiet machine."""

_SCRATCH = Path(tempfile.mkdtemp(prefix="trustcard-fuzz-"))
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)  # made at import, for the schema's app: gone at exit
DATABASE_URL = f"sqlite:///{_SCRATCH / 'fuzz.db'}"
"""Migrated, because the analysis endpoints read and write their table."""
upgrade(DATABASE_URL)
SETTINGS = {"REDIS_URL": REDIS_URL, "DATABASE_URL": DATABASE_URL, "SECRET_KEY": "fuzz", "API_KEY": API_KEY}
APP = create_app(load_settings(SETTINGS))
"""Built at import, because Schemathesis generates its tests from the document when the
module is collected. Building the app touches neither Redis nor the database."""
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP, config=config(MAX_EXAMPLES, API_KEY))

statuses = StatusLog()
"""Status codes seen per documented path, both runs."""
per_operation = StatusLog()
"""The same, from the per-operation run only: it sends each operation many requests."""


@pytest.fixture(scope="module", autouse=True)
def fuzz_redis(redis_url: str) -> Iterator[Redis]:
    """The suite's Redis database, empty before and after; the app's connections closed.
    `redis_url` fails the run, never skips it, when Redis does not answer or is in use."""
    client = Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()
    APP.extensions["trustcard.redis"].close()
    APP.extensions["trustcard.engine"].dispose()
    # Not every generated submission was refused: each job type the per-operation run
    # reached queued a task.
    assert not per_operation.submit_paths_never_accepted(), per_operation.by_path


@schema.parametrize()
def test_every_operation_keeps_to_the_document(case: schemathesis.Case, fuzz_redis: Redis) -> None:
    fuzz_redis.flushdb()  # each example starts from nothing, so a failure replays the same way
    response = case.call_and_validate(excluded_checks=EXCLUDED_CHECKS)
    statuses.add(case.path, response.status_code)
    per_operation.add(case.path, response.status_code)
    check_submission(response, fuzz_redis)


def test_workflows_keep_to_the_document(fuzz_redis: Redis) -> None:
    machine = workflow_machine(schema, statuses, fuzz_redis, reset=fuzz_redis.flushdb)
    machine.run(settings=hypothesis_settings(MAX_EXAMPLES // 2))
    assert statuses.tasks_found(), statuses.by_path["/tasks/{task_id}"]
