"""Schemathesis against the app's own OpenAPI document, on a real Redis.

Every documented operation gets generated requests, valid and invalid ones, sent
through the WSGI app; then generated workflows follow the document's links (submit,
then read, cancel or retry that task). No worker runs, so submitted jobs just wait on their
queue. The promises checked: no 5xx, every status code documented, every answer (body,
content type, headers) conforms to the document, auth is enforced where documented.

Three of Schemathesis' checks are left out, each because the document cannot say what
the service rightly does, not because the service is wrong:
- `positive_data_acceptance` and `negative_data_rejection`: a job type's parameters may
  come in the query string or the body, and one given in both places is refused with
  400. OpenAPI cannot state "in one place or the other", so schema-valid requests that
  give a parameter twice are refused, and a body missing a parameter that the query
  string carries is accepted.
- `allow_header_conformance`: Flask answers OPTIONS on /tasks/<id> with POST in `Allow`,
  because the one rule `POST /tasks/<path:job_route>` matches any path under /tasks/
  (an unknown job type then answers 404); the document lists POST only for catalogued
  job types.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from redis import Redis
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    negative_data_rejection,
    positive_data_acceptance,
)

from tests.integration.conftest import REDIS_URL
from trustcard.app import create_app
from trustcard.catalogue import JOB_TYPES
from trustcard.config import load_settings

pytestmark = pytest.mark.integration

API_KEY = "fuzz-test-key"
MAX_EXAMPLES = 50
"""Per operation and phase: about 700 requests in all, some seconds on a quiet machine."""
EXCLUDED_CHECKS = [positive_data_acceptance, negative_data_rejection, allow_header_conformance]
SUBMIT_PATHS = {f"/tasks/{job_type.route}" for job_type in JOB_TYPES}

SETTINGS = {
    "REDIS_URL": REDIS_URL,
    "DATABASE_URL": "sqlite://",
    "SECRET_KEY": "fuzz",
    "API_KEY": API_KEY,
    # Off, so a long run is not all 429s; the 429 answer is checked against the document
    # in tests/unit/test_openapi.py.
    "RATE_LIMIT_PER_MINUTE": "0",
}
APP = create_app(load_settings(SETTINGS))
"""Built at import, because Schemathesis generates its tests from the document when the
module is collected. Building the app touches neither Redis nor the database."""
CONFIG = schemathesis.Config.from_dict(
    {
        # The document's own bearer scheme, so Schemathesis sends the key where it is needed
        # and also checks that requests without it, or with a wrong one, are refused.
        "auth": {"openapi": {"bearerAuth": {"bearer": API_KEY}}},
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},  # none: no files in the tree
    }
)
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP, config=CONFIG)

statuses: defaultdict[str, set[int]] = defaultdict(set)
"""Status codes seen per documented path, to prove the runs got past validation."""
per_operation: defaultdict[str, set[int]] = defaultdict(set)
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
    for path in sorted(SUBMIT_PATHS):
        seen = per_operation[path]
        assert not seen or 202 in seen, f"{path} never accepted a task: {sorted(seen)}"


@schema.parametrize()
def test_every_operation_keeps_to_the_document(case: schemathesis.Case, fuzz_redis: Redis) -> None:
    fuzz_redis.flushdb()  # each example starts from nothing, so a failure replays the same way
    response = case.call_and_validate(excluded_checks=EXCLUDED_CHECKS)
    statuses[case.path].add(response.status_code)
    per_operation[case.path].add(response.status_code)
    if response.status_code == 202:
        assert fuzz_redis.exists(f"rq:job:{response.json()['task_id']}"), "202 for a task Redis does not have"


class TaskWorkflows(schema.as_state_machine()):  # type: ignore[misc]
    """Submit, then read, cancel, retry: the document's links, with real task ids."""

    def setup(self) -> None:
        # Each scenario starts from an empty database: Hypothesis replays scenarios and
        # needs the same steps to meet the same answers (an Idempotency-Key, for one,
        # answers differently the second time).
        redis = Redis.from_url(REDIS_URL)
        redis.flushdb()
        redis.close()

    def validate_response(self, response: Any, case: schemathesis.Case, *args: Any, **kwargs: Any) -> None:
        statuses[case.path].add(response.status_code)
        case.validate_response(response, excluded_checks=EXCLUDED_CHECKS, transport_kwargs=kwargs)


def test_workflows_keep_to_the_document() -> None:
    TaskWorkflows.run(
        settings=hypothesis.settings(
            max_examples=MAX_EXAMPLES // 2,
            stateful_step_count=6,
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )
    # Real task ids reached the task endpoints: some read or cancel found its task.
    assert statuses["/tasks/{task_id}"] & {200, 409}, statuses["/tasks/{task_id}"]
