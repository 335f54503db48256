"""What the Schemathesis runs share: the suite's (tests/integration/test_fuzz.py, through
the WSGI app) and scripts/fuzz.py's (over HTTP, against gunicorn and a real worker).

The promises checked: no 5xx, every status code documented, every answer (body, content
type, headers) conforms to the document, auth is enforced where documented, and a 202
names a task that Redis really holds.

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
from collections.abc import Callable
from typing import Any

import hypothesis
import schemathesis
from redis import Redis
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    negative_data_rejection,
    positive_data_acceptance,
)

from trustcard.catalogue import JOB_TYPES

EXCLUDED_CHECKS = [positive_data_acceptance, negative_data_rejection, allow_header_conformance]
SUBMIT_PATHS = {f"/tasks/{job_type.route}" for job_type in JOB_TYPES}
STATEFUL_STEPS = 6
"""Calls per generated workflow (submit, then follow the document's links)."""


def config(max_examples: int, api_key: str | None = None) -> schemathesis.Config:
    """Schemathesis' settings. With a key, the document's own bearer scheme: Schemathesis
    sends it where it is needed, and checks that requests without it, or with a wrong
    one, are refused."""
    settings: dict[str, Any] = {
        "generation": {"max-examples": max_examples, "database": "none"},  # none: no files in the tree
    }
    if api_key is not None:
        settings["auth"] = {"openapi": {"bearerAuth": {"bearer": api_key}}}
    return schemathesis.Config.from_dict(settings)


def hypothesis_settings(max_examples: int) -> hypothesis.settings:
    """For runs of ours (workflows, the script's cases): no deadline (a request's time is
    the server's, not the generator's), no example files, no health-check aborts."""
    return hypothesis.settings(
        max_examples=max_examples,
        stateful_step_count=STATEFUL_STEPS,
        deadline=None,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )


class StatusLog:
    """Status codes seen per documented path, to prove a run got past validation."""

    def __init__(self) -> None:
        self.by_path: defaultdict[str, set[int]] = defaultdict(set)
        self.answers = 0

    def add(self, path: str, status: int) -> None:
        self.by_path[path].add(status)
        self.answers += 1

    def submit_paths_never_accepted(self) -> list[str]:
        """Job types the run reached that never answered 202: every submission refused."""
        return [path for path in sorted(SUBMIT_PATHS) if self.by_path[path] and 202 not in self.by_path[path]]

    def tasks_found(self) -> bool:
        """Some read or cancel of a task id met a real task (the workflows carried ids)."""
        return bool(self.by_path["/tasks/{task_id}"] & {200, 409})


def check_submission(response: Any, redis: Redis) -> None:
    """A 202 names tasks that Redis holds (one, or a batch's): nothing was accepted and then lost."""
    if response.status_code == 202:
        body = response.json()
        task_ids = [task["task_id"] for task in body["tasks"]] if "tasks" in body else [body["task_id"]]
        for task_id in task_ids:
            assert redis.exists(f"rq:job:{task_id}"), f"202 for task {task_id}, which Redis does not have"


def workflow_machine(
    schema: Any, statuses: StatusLog, redis: Redis, reset: Callable[[], None] | None = None
) -> type:
    """A state machine over the document's links: submit, then read, cancel or retry that
    task with its real id. `reset` runs before each scenario (the suite empties its Redis,
    so that a replayed scenario meets the same answers)."""

    class TaskWorkflows(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            if reset is not None:
                reset()

        def validate_response(self, response: Any, case: schemathesis.Case, *args: Any, **kwargs: Any) -> None:
            statuses.add(case.path, response.status_code)
            case.validate_response(response, excluded_checks=EXCLUDED_CHECKS, transport_kwargs=kwargs)
            check_submission(response, redis)

    return TaskWorkflows
