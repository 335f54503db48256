"""rq-dashboard at /rq reads our JSON jobs in every state, with a JSON job running on a real worker."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.stack import Stack
from tests.support.waiting import wait_until
from tests.support.stack import DASHBOARD_LOGIN as LOGIN
from trustcard.catalogue import QUEUE_NAMES

pytestmark = pytest.mark.integration
RUNNING_SECONDS = 600
"""The running job sleeps far longer than the checks take; it is cancelled at the end."""
PAGES = ("/rq/", "/rq/0/view/queues", "/rq/0/view/workers", "/rq/0/view/jobs")


def jobs_in(stack: Stack, registry: str) -> list[str]:
    response = stack.client.get(f"/rq/0/data/jobs/analysis/{registry}/50/asc/1.json", auth=LOGIN)
    assert response.status_code == 200, (registry, response.get_data(as_text=True)[:500])
    return [job["id"] for job in response.get_json()["jobs"]]


@pytest.fixture
def busy(dashboard_stack: Callable[..., Stack]) -> Iterator[tuple[Stack, dict[str, str]]]:  # noqa: F811
    """One JSON job running on a real worker, and others queued, finished, failed and canceled."""
    stack = dashboard_stack()
    strict = dashboard_stack(JOB_SOFT_TIMEOUT="1", JOB_TIMEOUT="2")  # same Redis; its jobs get a 1 s limit
    stack.start_worker()
    tasks = {"finished": stack.submit("/tasks/test/add?x=1&y=2")}
    stack.wait_for(tasks["finished"])
    tasks["failed"] = strict.submit("/tasks/test/sleep?seconds=30")
    assert stack.wait_for(tasks["failed"])["status"] == "failed"
    tasks["started"] = stack.submit(f"/tasks/test/sleep?seconds={RUNNING_SECONDS}")
    stack.wait_for(tasks["started"], ("started",))
    tasks["queued"] = stack.submit("/tasks/test/add?x=5&y=5")  # waits behind the running job
    tasks["canceled"] = stack.submit("/tasks/test/add?x=6&y=6")
    assert stack.client.delete(f"/tasks/{tasks['canceled']}").status_code == 200
    yield stack, tasks
    stack.client.delete(f"/tasks/{tasks['started']}")  # so the worker stops at once


def test_workers_view_lists_the_running_json_job(busy: tuple[Stack, dict[str, str]]) -> None:
    stack, tasks = busy
    response = stack.client.get("/rq/0/data/workers.json", auth=LOGIN)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    [worker] = response.get_json()["workers"]
    assert worker["current_job"]["job_id"] == tasks["started"]
    assert worker["current_job"]["call_string"] == f"workers.diagnostics.sleep(seconds={RUNNING_SECONDS})"
    assert worker["queues"] == ["webhooks", "analysis", "models", "ingest"]
    page = stack.client.get("/rq/0/view/workers", auth=LOGIN)
    assert page.status_code == 200
    assert stack.task(tasks["started"])["status"] == "started"  # it was running all along


def test_every_page_and_data_view_reads_jobs_in_every_state(busy: tuple[Stack, dict[str, str]]) -> None:
    stack, tasks = busy
    get = stack.client.get
    for page in PAGES:
        response = get(page, auth=LOGIN, follow_redirects=True)
        assert response.status_code == 200, page
        assert "RQ dashboard" in response.get_data(as_text=True), page
    queues = get("/rq/0/data/queues.json", auth=LOGIN)
    assert queues.status_code == 200
    listed = {queue["name"]: queue for queue in queues.get_json()["queues"]}
    assert set(listed) == set(QUEUE_NAMES)  # the idle queues too
    assert all(queue["count"] == 0 for name, queue in listed.items() if name != "analysis")
    analysis = listed["analysis"]
    assert analysis["name"] == "analysis" and analysis["count"] == 1
    assert analysis["failed_job_registry_count"] == 1 and analysis["canceled_job_registry_count"] == 1

    for registry, task_id in tasks.items():
        assert jobs_in(stack, registry) == [task_id], registry
        view = get(f"/rq/0/view/jobs/analysis/{registry}/8/asc/1", auth=LOGIN)
        assert view.status_code == 200, registry
        page = get(f"/rq/0/view/job/{task_id}", auth=LOGIN)
        assert page.status_code == 200 and task_id in page.get_data(as_text=True), registry
        data = get(f"/rq/0/data/job/{task_id}.json", auth=LOGIN)
        assert data.status_code == 200, (registry, data.get_data(as_text=True)[:500])
        assert data.get_json()["id"] == task_id and data.get_json()["status"] == registry  # RQ names both alike
    for registry in ("deferred", "scheduled"):
        assert jobs_in(stack, registry) == []

    finished = get(f"/rq/0/data/job/{tasks['finished']}.json", auth=LOGIN).get_json()
    assert finished["result"] == 3 and finished["description"] == "workers.diagnostics.add(x=1, y=2)"
    failed = get(f"/rq/0/data/job/{tasks['failed']}.json", auth=LOGIN).get_json()
    assert "JobTimeoutException" in failed["exc_info"]
    assert stack.task(tasks["started"])["status"] == "started"


def test_actions_keep_jobs_readable_by_the_worker(dashboard_stack: Callable[..., Stack]) -> None:  # noqa: F811
    stack = dashboard_stack()
    strict = dashboard_stack(JOB_SOFT_TIMEOUT="1", JOB_TIMEOUT="2")
    worker = stack.start_worker()
    finished = stack.submit("/tasks/test/add?x=2&y=3")
    failed = strict.submit("/tasks/test/sleep?seconds=30")
    stack.wait_for(finished)
    first_end = stack.wait_for(failed)["ended_at"]

    assert stack.client.post(f"/rq/job/{failed}/requeue", auth=LOGIN).get_json() == {"status": "OK"}
    again = wait_until(
        lambda: (task := stack.task(failed))["status"] == "failed" and task["ended_at"] != first_end and task,
        30,
        f"requeued task {failed} to run and time out again",
    )
    assert "time" in again["error"].lower()  # the same 1 s limit, read back from the requeued JSON job
    assert "Deserializ" not in worker.log()

    refused = stack.client.post(f"/rq/job/{finished}/requeue", auth=LOGIN)
    assert refused.status_code == 409 and refused.get_json()["error"] == "task_not_retryable"
    assert stack.client.post("/rq/queue/analysis/failed/empty", auth=LOGIN).get_json() == {"status": "OK"}
    assert jobs_in(stack, "failed") == []
    assert stack.client.post(f"/rq/job/{finished}/delete", auth=LOGIN).get_json() == {"status": "OK"}
    assert stack.client.get(f"/tasks/{finished}").status_code == 404
    assert stack.client.post(f"/rq/job/{finished}/delete").status_code == 401
