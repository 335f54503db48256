"""`GET /metrics` with real workers: each way a task ends moves its counter by exactly one.

Tasks run on the Procfile's worker against a real Redis; the figures are read back through
the API, from two app instances, since any web process must answer the same numbers.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from tests.support.stack import Stack, WebProcess
from tests.support.waiting import wait_until
from trustcard.api.app import create_app

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
ZERO_OUTCOMES = {"completed": 0.0, "failed": 0.0, "cancelled": 0.0}


def scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    samples: Samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def ended(samples: Samples, job_type: str) -> dict[str, float]:
    return {
        outcome: samples[("trustcard_tasks_ended_total", (("outcome", outcome), ("type", job_type)))]
        for outcome in ZERO_OUTCOMES
    }


def runs(samples: Samples, job_type: str) -> tuple[float, float]:
    """The run-time histogram of `job_type`: (count, sum)."""
    labels = (("type", job_type),)
    return samples[("trustcard_task_duration_seconds_count", labels)], samples[
        ("trustcard_task_duration_seconds_sum", labels)
    ]


def bucket(samples: Samples, job_type: str, le: str) -> float:
    return samples[("trustcard_task_duration_seconds_bucket", (("le", le), ("type", job_type)))]


def gauge(samples: Samples, name: str, label: str, value: str) -> float:
    return samples[(name, ((label, value),))]


def submit(stack: Stack, path: str, **kwargs: object) -> str:
    """A submission whose answer is closed, as a server closes it: that is when it is counted."""
    with stack.client.post(path, **kwargs) as response:
        assert response.status_code == 202, response.get_json()
        return str(response.get_json()["task_id"])


def test_each_way_a_task_ends_counts_once_and_two_apps_read_the_same(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    worker = stack.start_worker()
    assert ended(scrape(stack.client), "test.add") == ZERO_OUTCOMES

    adds = [submit(stack, f"/tasks/test/add?x={n}&y=1") for n in range(3)]
    for task_id in adds:
        assert stack.wait_for(task_id)["status"] == "completed"
    failing = submit(stack, "/tasks/test/fail", json={"message": "boom"})
    assert stack.wait_for(failing, ("failed",), timeout=30)["status"] == "failed"  # after its one retry

    running = submit(stack, "/tasks/test/sleep?seconds=30")
    stack.wait_for(running, ("started",))
    waiting = [submit(stack, "/tasks/test/add?x=1&y=1") for _ in range(2)]
    busy = scrape(stack.client)
    assert gauge(busy, "trustcard_queue_depth", "queue", "analysis") == 2
    assert gauge(busy, "trustcard_queue_oldest_job_age_seconds", "queue", "analysis") > 0
    assert gauge(busy, "trustcard_workers", "state", "busy") == 1
    assert gauge(busy, "trustcard_workers", "state", "idle") == 0
    for task_id in waiting:  # cancelled before they started
        assert stack.client.delete(f"/tasks/{task_id}").get_json()["status"] == "cancelled"
    assert stack.client.delete(f"/tasks/{running}").get_json()["status"] == "cancelled"  # stopped while running

    killed = submit(stack, "/tasks/test/sleep?seconds=30")
    stack.wait_for(killed, ("started",))
    os.kill(wait_until(worker.horse, 5, "the job process"), signal.SIGKILL)  # as the OOM killer would
    assert stack.wait_for(killed, ("failed",), timeout=10)["status"] == "failed"
    assert stack.wait_for(submit(stack, "/tasks/test/add?x=5&y=5"))["result"] == 10

    samples = scrape(stack.client)
    assert ended(samples, "test.add") == {"completed": 4, "failed": 0, "cancelled": 2}
    assert ended(samples, "test.fail") == {"completed": 0, "failed": 1, "cancelled": 0}  # not 2: a retry is no end
    assert ended(samples, "test.sleep") == {"completed": 0, "failed": 1, "cancelled": 1}
    count, total = runs(samples, "test.add")
    assert count == 4 and 0 < total < 1  # the cancelled ones never ran: no run time
    assert bucket(samples, "test.add", "0.5") == 4
    assert runs(samples, "test.fail")[0] == 1
    count, total = runs(samples, "test.sleep")
    assert count == 2 and total > 0
    assert gauge(samples, "trustcard_queue_depth", "queue", "analysis") == 0
    assert gauge(samples, "trustcard_queue_oldest_job_age_seconds", "queue", "analysis") == 0
    submitted = {
        outcome: samples[("trustcard_submissions_total", (("outcome", outcome),))]
        for outcome in ("accepted", "rate_limited", "queue_full", "unavailable", "invalid")
    }
    assert submitted == {"accepted": 9, "rate_limited": 0, "queue_full": 0, "unavailable": 0, "invalid": 0}

    # Another web process (another app on the same Redis) answers the same figures.
    other = create_app(stack.settings)
    try:
        wait_until(lambda: gauge(scrape(stack.client), "trustcard_workers", "state", "idle") == 1, 10, "idle worker")
        assert scrape(other.test_client()) == scrape(stack.client)
    finally:
        other.extensions["trustcard.redis"].close()
        other.extensions["trustcard.engine"].dispose()


def test_job_timeout_setting_a_task_killed_at_the_hard_limit_counts_failed_with_its_run_time(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(JOB_TIMEOUT="2")
    worker = stack.start_worker()
    task_id = submit(stack, "/tasks/test/sleep?seconds=30")
    stack.wait_for(task_id, ("started",))
    os.kill(wait_until(worker.horse, 5, "the job process"), signal.SIGSTOP)  # deaf to the soft limit's alarm
    task = stack.wait_for(task_id, ("failed",), timeout=15)
    assert task["error"].startswith("TimeLimitExceeded")
    samples = scrape(stack.client)
    assert ended(samples, "test.sleep") == {"completed": 0, "failed": 1, "cancelled": 0}
    count, total = runs(samples, "test.sleep")
    assert count == 1 and 2 <= total < 5
    assert bucket(samples, "test.sleep", "1.0") == 0 and bucket(samples, "test.sleep", "5.0") == 1


def test_worker_shutdown_grace_setting_a_job_handed_back_at_shutdown_is_no_end(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(WORKER_SHUTDOWN_GRACE="1")
    worker = stack.start_worker()
    task_id = submit(stack, "/tasks/test/sleep?seconds=30")
    stack.wait_for(task_id, ("started",))
    os.killpg(worker.process.pid, signal.SIGTERM)
    worker.process.wait(timeout=15)
    assert "handed back to queue analysis" in worker.log()
    samples = scrape(stack.client)
    assert ended(samples, "test.sleep") == ZERO_OUTCOMES
    assert runs(samples, "test.sleep")[0] == 0
    assert gauge(samples, "trustcard_queue_depth", "queue", "analysis") == 1
    assert gauge(samples, "trustcard_workers", "state", "busy") == 0


def _http(web: WebProcess, method: str, path: str) -> tuple[int, bytes]:
    request = urllib.request.Request(web.url + path, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_gunicorn_counts_each_answer_once_it_is_sent_and_serves_the_same_figures(
    make_stack: Callable[..., Stack], start_web: Callable[..., WebProcess]
) -> None:
    """The Procfile's web: the count written when gunicorn closes the response, read by any process."""
    stack = make_stack()
    web = start_web(stack.env)
    answers = [_http(web, "POST", "/tasks/test/add?x=1&y=2")[0] for _ in range(3)]
    answers.append(_http(web, "POST", "/tasks/test/add?x=1&y=banana")[0])
    assert answers == [202, 202, 202, 422]
    fourth = json.loads(_http(web, "POST", "/tasks/test/add?x=0&y=0")[1])["task_id"]
    assert _http(web, "POST", f"/tasks/{fourth}/retry")[0] == 409  # a retry (refused: still waiting) is no submission

    def counted() -> Samples:
        samples = scrape(stack.client)
        return samples if samples[("trustcard_submissions_total", (("outcome", "accepted"),))] == 4 else {}

    samples = wait_until(counted, 5, "the submissions to be counted")
    assert samples[("trustcard_submissions_total", (("outcome", "invalid"),))] == 1
    assert gauge(samples, "trustcard_queue_depth", "queue", "analysis") == 4
    status, text = _http(web, "GET", "/metrics")
    assert status == 200
    over_http = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if not sample.name.startswith("trustcard_queue_oldest")  # it grows between the two reads
    }
    assert over_http == {key: value for key, value in scrape(stack.client).items() if key in over_http}
    assert len(over_http) == len([k for k in samples if not k[0].startswith("trustcard_queue_oldest")])
