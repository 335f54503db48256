"""Task ids in the URL: one with '/' in it (or its encoded form) is an unknown task.

The submit rule `POST /tasks/<path:job_route>` matches any path under /tasks/, so a
GET or DELETE of `/tasks/a/b` once met that rule and answered 405. Now it is the 404
`task_not_found` that any unknown id gets, while submissions and retries still route,
and a job type's own path keeps answering 405 to anything but POST.
"""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

SLASHED_IDS = ["a/b", "..%2F..%2Fetc", "../../etc", "x/retry/more", "test/add/more", "abc/"]
JOB_TYPE_NAMES = ["test.add", "test.tally", "analysis.process_post"]
"""A job type's name is not its path (`/tasks/test/add`): at /tasks/<name> it is an unknown id
(the fuzzer found DELETE /tasks/test.tally answering an undocumented 405)."""


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("task_id", SLASHED_IDS)
def test_an_id_with_a_slash_is_an_unknown_task(client: FlaskClient, method: str, task_id: str) -> None:
    response = client.open(f"/tasks/{task_id}", method=method)
    assert response.status_code == 404, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == "task_not_found"
    assert "No task has the id" in body["message"]


def test_submit_and_retry_still_route_beside_the_slashed_ids(client: FlaskClient) -> None:
    submitted = client.post("/tasks/test/add?x=7&y=8")
    assert submitted.status_code == 202
    task_id = submitted.get_json()["task_id"]
    assert client.get(f"/tasks/{task_id}").get_json()["status"] == "pending"
    assert client.delete(f"/tasks/{task_id}").get_json()["status"] == "cancelled"
    retried = client.post(f"/tasks/{task_id}/retry")
    assert retried.status_code == 202 and retried.get_json()["task_id"] == task_id
    assert client.post("/tasks/no-such-task/retry").get_json()["error"] == "task_not_found"
    assert client.post("/tasks/test/nope").get_json()["error"] == "unknown_job_type"
    assert client.get("/tasks/").status_code == 200  # the running list keeps its own rule


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("path", ["/tasks/test/add", "/tasks/analysis/process_post", "/tasks/test/long/"])
def test_a_job_types_path_takes_post_only(client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    body = response.get_json()
    assert body["error"] == "method_not_allowed" and "takes POST only" in body["message"]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("name", JOB_TYPE_NAMES)
def test_a_job_types_name_as_an_id_is_an_unknown_task(client: FlaskClient, method: str, name: str) -> None:
    response = client.open(f"/tasks/{name}", method=method)
    assert response.status_code == 404, response.get_data(as_text=True)
    assert response.get_json()["error"] == "task_not_found"
