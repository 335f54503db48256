"""A catalogued job type's path answers POST only.

The task views take `<path:task_id>`, so that an id with '/' in it is an unknown task
(404) rather than a stray 405 from the submit rule. A job type's own path, such as
/tasks/test/add, is a documented path whose one method is POST: a GET or DELETE there
is 405 with `Allow: POST`, as for any other method a documented path does not take.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

from werkzeug.exceptions import MethodNotAllowed

from trustcard.catalogue import find_by_route

View = TypeVar("View", bound=Callable[..., object])
BATCH_ROUTE = "batch"
"""`/tasks/batch` (`trustcard.api.batch_routes`), which takes POST only as well."""


def post_only_at_job_routes(view: View) -> View:
    """Wrap a view taking `task_id`: 405 when the id is a job type's route."""

    @functools.wraps(view)
    def checked(task_id: str) -> object:
        job_type = find_by_route(task_id)
        # Its route only (/tasks/test/add): /tasks/test.add is an id, unknown like any other (404).
        if (job_type is not None and job_type.route == task_id.strip("/")) or task_id == BATCH_ROUTE:
            what = "a batch of tasks" if task_id == BATCH_ROUTE else "a task"
            raise MethodNotAllowed(
                valid_methods=["POST"], description=f"/tasks/{task_id} takes POST only: it submits {what}."
            )
        return view(task_id)

    return checked  # type: ignore[return-value]
