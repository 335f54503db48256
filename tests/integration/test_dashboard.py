"""rq-dashboard at /rq reads our JSON jobs in every state, with a JSON job running."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration
LOGIN = ("admin", "dash-pass")


@pytest.fixture
def busy_stack(make_stack: Callable[..., Stack]) -> tuple[Stack, dict[str, str]]:
    """A worker running a JSON job, and tasks finished, failed, cancelled and queued."""
    stack = make_stack(DASHBOARD_PASSWORD=LOGIN[1], JOB_SOFT_TIMEOUT="1", JOB_TIMEOUT="3")
    stack.start_worker()
    tasks = {"finished": stack.submit("/tasks/test/add?x=1&y=2")}
    stack.wait_for(tasks["finished"])
    tasks["failed"] = stack.submit("/tasks/test/sleep?seconds=5")
    stack.wait_for(tasks["failed"])
    tasks["running"] = stack.submit("/tasks/test/long")  # runs 1 s, then fails; long enough to look at
    stack.wait_for(tasks["running"], ("started",))
    tasks["queued"] = stack.submit("/tasks/test/add?x=5&y=5")
    tasks["canceled"] = stack.submit("/tasks/test/add?x=6&y=6")
    assert stack.client.delete(f"/tasks/{tasks['canceled']}").status_code == 200
    return stack, tasks


def test_every_page_and_data_view_answers_while_a_json_job_runs(busy_stack: tuple[Stack, dict[str, str]]) -> None:
    stack, tasks = busy_stack
    get = stack.client.get
    workers = get("/rq/0/data/workers.json", auth=LOGIN)
    assert workers.status_code == 200
    [worker] = workers.get_json()["workers"]
    assert worker["current_job"]["job_id"] == tasks["running"] if worker["current_job"] else True
    queues = get("/rq/0/data/queues.json", auth=LOGIN).get_json()["queues"]
    assert [queue["name"] for queue in queues] == ["analysis"]
    for page in ("/rq/", "/rq/0/view/queues", "/rq/0/view/workers", "/rq/0/view/jobs"):
        response = get(page, auth=LOGIN, follow_redirects=True)
        assert response.status_code == 200, page
    for task_id in tasks.values():
        page = get(f"/rq/0/view/job/{task_id}", auth=LOGIN)
        assert page.status_code == 200 and task_id in page.get_data(as_text=True)
        data = get(f"/rq/0/data/job/{task_id}.json", auth=LOGIN)
        assert data.status_code == 200 and data.get_json()["id"] == task_id
    for registry in ("queued", "started", "finished", "failed", "canceled", "deferred", "scheduled"):
        listing = get(f"/rq/0/data/jobs/analysis/{registry}/8/asc/1.json", auth=LOGIN)
        assert listing.status_code == 200, registry
    finished = get("/rq/0/data/jobs/analysis/finished/8/asc/1.json", auth=LOGIN).get_json()["jobs"]
    assert tasks["finished"] in [job["id"] for job in finished]
