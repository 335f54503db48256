"""The /metrics figures on fakeredis: what each end of a task and each submission adds,
through RQ 3's own code paths (the seams the worker counts in), and how they are read.

The integration tests (`tests/integration/test_metrics.py`) end real tasks on real workers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import fakeredis
import pytest
import redis.client
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue
from rq.exceptions import AbandonedJobError
from rq.job import Job, JobStatus, Retry
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.utils import now, utcformat

from trustcard.api.app import create_app
from trustcard.config import Settings, load_settings
from trustcard.metrics import store
from trustcard.metrics.collector import read_snapshot
from trustcard.metrics.ends import cancel_waiting, count_abandoned, count_if_abandoned
from trustcard.settling import settling
from trustcard.metrics.outcomes import (
    DURATION_BUCKETS,
    SubmissionOutcome,
    TaskOutcome,
    job_type_name,
    submission_outcome,
)
from workers.supervisor import JobProcessSupervisor
from workers.supervisor.batches import success_batch
from workers.supervisor.bookkeeping import HAS_DEPENDENTS, Bookkeeper, Dequeued

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: FlaskClient, **kwargs: Any) -> Samples:
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type == "text/plain; version=0.0.4; charset=utf-8"
    samples: Samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def ended(samples: Samples, job_type: str, outcome: str) -> float:
    return samples[("trustcard_tasks_ended_total", (("outcome", outcome), ("type", job_type)))]


def duration(samples: Samples, job_type: str, suffix: str, le: str | None = None) -> float:
    labels = (("le", le), ("type", job_type)) if le is not None else (("type", job_type),)
    return samples[(f"trustcard_task_duration_seconds_{suffix}", labels)]


def submissions(samples: Samples) -> dict[str, float]:
    return {
        outcome.value: samples[("trustcard_submissions_total", (("outcome", outcome.value),))]
        for outcome in SubmissionOutcome
    }


def enqueue(queue: Queue, job_type: str = "test.add", **kwargs: Any) -> Job:
    function = {"test.add": "workers.diagnostics.add", "test.fail": "workers.diagnostics.fail"}[job_type]
    params = {"x": 1, "y": 2} if job_type == "test.add" else {"message": "boom"}
    return queue.enqueue_call(function, kwargs=params, meta={"job_type": job_type}, **kwargs)


def started(job: Job, worker: JobProcessSupervisor, seconds: float) -> Job:
    """`job` as a worker leaves it after running for `seconds`: started, with both times set."""
    with job.connection.pipeline() as pipeline:
        job.prepare_for_execution(worker.name, pipeline)
        pipeline.execute()
    job.started_at = now() - timedelta(seconds=seconds)
    job.ended_at = now()
    return job


# --- what is counted --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "outcome"),
    [
        (202, None, SubmissionOutcome.ACCEPTED),
        (429, "rate_limited", SubmissionOutcome.RATE_LIMITED),
        (503, "queue_full", SubmissionOutcome.QUEUE_FULL),
        (503, "not_replicated", SubmissionOutcome.NOT_REPLICATED),
        (503, "queue_unavailable", SubmissionOutcome.UNAVAILABLE),
        (500, "internal_error", SubmissionOutcome.UNAVAILABLE),
        (422, "validation_error", SubmissionOutcome.INVALID),
        (404, "unknown_job_type", SubmissionOutcome.INVALID),
        (401, "unauthorized", SubmissionOutcome.INVALID),
        (413, "payload_too_large", SubmissionOutcome.INVALID),
        (200, None, None),
    ],
)
def test_a_submission_answer_maps_to_one_outcome(status: int, error: str | None, outcome: object) -> None:
    assert submission_outcome(status, error) == outcome


def test_bucket_bounds_hold_their_own_value_and_the_last_is_inf() -> None:
    assert store.bucket_of(0.0) == "0.005"
    assert store.bucket_of(0.005) == "0.005"
    assert store.bucket_of(0.0051) == "0.01"
    assert store.bucket_of(DURATION_BUCKETS[-1]) == "600.0"
    assert store.bucket_of(DURATION_BUCKETS[-1] + 1) == "+Inf"


def test_a_job_naming_no_catalogued_type_is_unknown(queue: Queue) -> None:
    job = queue.enqueue_call("os.system", args=("true",))
    assert job_type_name(job) == "unknown"
    by_function = queue.enqueue_call("workers.diagnostics.add", kwargs={"x": 1, "y": 1})
    assert job_type_name(by_function) == "test.add"


# --- reading: the collector ---------------------------------------------------------------------


def test_an_empty_redis_reads_as_zeros_for_every_catalogued_series(client: FlaskClient) -> None:
    samples = scrape(client)
    assert samples[("trustcard_queue_depth", (("queue", "analysis"),))] == 0
    assert samples[("trustcard_queue_oldest_job_age_seconds", (("queue", "analysis"),))] == 0
    assert samples[("trustcard_workers", (("state", "busy"),))] == 0
    assert samples[("trustcard_workers", (("state", "idle"),))] == 0
    assert submissions(samples) == dict.fromkeys([o.value for o in SubmissionOutcome], 0)
    for job_type in ("test.add", "test.sleep", "test.long", "test.fail", "analysis.process_post"):
        for outcome in TaskOutcome:
            assert ended(samples, job_type, outcome.value) == 0
        assert duration(samples, job_type, "count") == 0
        assert duration(samples, job_type, "bucket", "+Inf") == 0


def test_queue_depth_and_the_age_of_its_head_job(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    first = submit_ok(client)
    submit_ok(client)
    fake_redis.hset(f"rq:job:{first}", "enqueued_at", utcformat(now() - timedelta(seconds=90)))
    samples = scrape(client)
    assert samples[("trustcard_queue_depth", (("queue", "analysis"),))] == 2
    assert 90 <= samples[("trustcard_queue_oldest_job_age_seconds", (("queue", "analysis"),))] < 100


def test_workers_busy_and_idle_from_rq_registry_ignoring_expired_ones(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis
) -> None:
    for name, state in (("a", "busy"), ("b", "idle"), ("c", "idle"), ("d", "suspended")):
        fake_redis.sadd("rq:workers", f"rq:worker:{name}")
        fake_redis.hset(f"rq:worker:{name}", "state", state)
    fake_redis.sadd("rq:workers", "rq:worker:gone")  # its key expired: no such worker any more
    samples = scrape(client)
    assert samples[("trustcard_workers", (("state", "busy"),))] == 1
    assert samples[("trustcard_workers", (("state", "idle"),))] == 3


def test_the_histogram_is_cumulative_with_count_and_sum(fake_redis: fakeredis.FakeRedis, client: FlaskClient) -> None:
    for seconds in (0.002, 0.02, 0.02, 7.0, 4000.0):
        for command in store.end_commands("test.sleep", TaskOutcome.COMPLETED, seconds):
            fake_redis.execute_command(*command)
    samples = scrape(client)
    assert duration(samples, "test.sleep", "bucket", "0.005") == 1
    assert duration(samples, "test.sleep", "bucket", "0.025") == 3
    assert duration(samples, "test.sleep", "bucket", "5.0") == 3
    assert duration(samples, "test.sleep", "bucket", "10.0") == 4
    assert duration(samples, "test.sleep", "bucket", "600.0") == 4
    assert duration(samples, "test.sleep", "bucket", "+Inf") == 5
    assert duration(samples, "test.sleep", "count") == 5
    assert duration(samples, "test.sleep", "sum") == pytest.approx(4007.042)
    assert ended(samples, "test.sleep", "completed") == 5


def test_a_scrape_is_two_redis_round_trips(
    client: FlaskClient, fake_redis: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    submit_ok(client)
    fake_redis.sadd("rq:workers", "rq:worker:a")
    fake_redis.hset("rq:worker:a", "state", "idle")
    sent: list[int] = []
    original = redis.client.Pipeline.execute

    def counted(self: redis.client.Pipeline, *args: Any, **kwargs: Any) -> Any:
        sent.append(len(self.command_stack))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", counted)
    scrape(client)
    assert len(sent) == 2, sent


def test_metrics_answer_json_503_when_redis_is_down(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    fake_redis.connection_pool.connection_kwargs["server"].connected = False
    response = client.get("/metrics")
    assert response.status_code == 503
    assert response.get_json()["error"] == "queue_unavailable" and response.headers["Retry-After"]


class TestMetricsTokenSetting:
    @pytest.fixture
    def app(self, settings: Settings, fake_redis: fakeredis.FakeRedis) -> Flask:
        guarded = load_settings({"METRICS_TOKEN": "scrape-me", "DATABASE_URL": settings.database_url})
        return create_app(guarded, redis=fake_redis)

    @pytest.mark.parametrize("header", [None, "Bearer wrong", "scrape-me", "Basic scrape-me", "Bearer "])
    def test_metrics_token_setting_refuses_a_scrape_without_it(self, client: FlaskClient, header: str | None) -> None:
        response = client.get("/metrics", headers={"Authorization": header} if header else {})
        assert response.status_code == 401
        assert response.get_json()["error"] == "unauthorized" and "METRICS_TOKEN" in response.get_json()["message"]

    def test_metrics_token_setting_opens_metrics_with_the_bearer_token(self, client: FlaskClient) -> None:
        samples = scrape(client, headers={"Authorization": "Bearer scrape-me"})
        assert ("trustcard_queue_depth", (("queue", "analysis"),)) in samples


def test_without_metrics_token_metrics_are_open(client: FlaskClient) -> None:
    assert client.get("/metrics").status_code == 200


# --- counting submissions -------------------------------------------------------------------------


def submit_ok(client: FlaskClient, path: str = "/tasks/test/add?x=1&y=2") -> str:
    with client.post(path) as response:
        assert response.status_code == 202, response.get_json()
        return str(response.get_json()["task_id"])


def test_submissions_counted_by_answer(client: FlaskClient) -> None:
    with client.post("/tasks/test/add?x=1&y=2") as response:
        assert response.status_code == 202
        assert submissions(scrape(client))["accepted"] == 1  # in the enqueue transaction itself
    task_id = submit_ok(client)
    for path, status in (("/tasks/test/add?x=1&y=banana", 422), ("/tasks/test/nope", 404)):
        with client.post(path) as response:
            assert response.status_code == status
            assert submissions(scrape(client))["invalid"] == (1 if status == 422 else 2) - 1  # once it is sent
    with client.delete(f"/tasks/{task_id}"):
        pass
    with client.post(f"/tasks/{task_id}/retry") as response:  # a retry is no submission
        assert response.status_code == 202
    with client.get(f"/tasks/{task_id}"):
        pass
    counts = submissions(scrape(client))
    assert counts == {"accepted": 2, "rate_limited": 0, "queue_full": 0, "not_replicated": 0, "unavailable": 0,
                      "invalid": 2}


def test_max_queue_depth_setting_counts_queue_full(settings: Settings, fake_redis: fakeredis.FakeRedis) -> None:
    app = create_app(load_settings({"MAX_QUEUE_DEPTH": "1", "DATABASE_URL": settings.database_url}), redis=fake_redis)
    client = app.test_client()
    submit_ok(client)
    with client.post("/tasks/test/add?x=1&y=2") as response:
        assert response.status_code == 503 and response.get_json()["error"] == "queue_full"
    assert submissions(scrape(client))["queue_full"] == 1


def test_a_broken_counter_never_changes_the_answer(client: FlaskClient, fake_redis: fakeredis.FakeRedis) -> None:
    fake_redis.set(store.SUBMISSIONS_KEY, "not a hash")  # every HINCRBY on it fails
    submit_ok(client)
    assert fake_redis.llen("rq:queue:analysis") == 1
    with client.post("/tasks/test/add?x=1&y=banana") as response:
        assert response.status_code == 422


def test_a_rate_limited_submission_is_counted_in_the_limits_own_script_under_burst_and_per_minute_settings(
    settings: Settings, fake_redis: fakeredis.FakeRedis
) -> None:
    env = {"RATE_LIMIT_BURST": "1", "RATE_LIMIT_PER_MINUTE": "1", "DATABASE_URL": settings.database_url}
    client = create_app(load_settings(env), redis=fake_redis).test_client()
    submit_ok(client)
    with client.post("/tasks/test/add?x=1&y=2") as response:
        assert response.status_code == 429
        assert submissions(scrape(client))["rate_limited"] == 1  # before the answer is even closed
    assert submissions(scrape(client)) == {
        "accepted": 1, "rate_limited": 1, "queue_full": 0, "not_replicated": 0, "unavailable": 0, "invalid": 0
    }


def test_redis_down_while_counting_a_submission_is_swallowed(fake_redis: fakeredis.FakeRedis) -> None:
    fake_redis.connection_pool.connection_kwargs["server"].connected = False
    store.count_submission(fake_redis, SubmissionOutcome.UNAVAILABLE)  # logs, does not raise


# --- counting ends of tasks, through RQ's own code paths --------------------------------------------


def test_a_failure_with_a_retry_left_is_no_end_and_the_last_one_is(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    job = started(enqueue(queue, "test.fail", retry=Retry(max=1)), worker, 0.3)
    worker.handle_job_failure(job, queue, exc_string="DeliberateFailure: boom")
    assert job.get_status(refresh=True) == JobStatus.QUEUED
    assert fake_redis.hgetall(store.TASKS_ENDED_KEY) == {}
    job = started(Job.fetch(job.id, connection=fake_redis, serializer=JSONSerializer), worker, 0.3)
    worker.handle_job_failure(job, queue, exc_string="DeliberateFailure: boom")
    assert job.get_status(refresh=True) == JobStatus.FAILED
    snapshot = read_snapshot(fake_redis)
    assert snapshot.tasks_ended == {("test.fail", "failed"): 1}
    assert snapshot.durations["test.fail"].counts[DURATION_BUCKETS.index(0.5)] == 1


def test_the_count_travels_in_rqs_own_failure_transaction(
    worker: JobProcessSupervisor, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seam: RQ 3 calls `cleanup_execution` inside `handle_job_failure`'s MULTI/EXEC."""
    job = started(enqueue(queue), worker, 0.01)
    transactions: list[list[str]] = []
    original = redis.client.Pipeline.execute

    def recorded(self: redis.client.Pipeline, *args: Any, **kwargs: Any) -> Any:
        transactions.append([str(command[0][0]) for command in self.command_stack])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", recorded)
    worker.handle_job_failure(job, queue, exc_string="ValueError: no")
    assert [t for t in transactions if "EVAL" in t and "ZADD" in t], transactions  # the failure and its count


def test_a_job_stopped_on_request_is_cancelled(worker: JobProcessSupervisor, queue: Queue,
                                               fake_redis: fakeredis.FakeRedis) -> None:
    job = started(enqueue(queue, "test.fail", retry=Retry(max=1)), worker, 2.0)
    worker._stopped_job_id = job.id
    worker.handle_job_failure(job, queue, exc_string="Job stopped by user, work-horse terminated.")
    assert job.get_status(refresh=True) == JobStatus.STOPPED
    snapshot = read_snapshot(fake_redis)
    assert snapshot.tasks_ended == {("test.fail", "cancelled"): 1}
    assert snapshot.durations["test.fail"].total_seconds == pytest.approx(2.0, abs=0.5)


def test_a_job_handed_back_at_shutdown_is_no_end(worker: JobProcessSupervisor, queue: Queue,
                                                 fake_redis: fakeredis.FakeRedis) -> None:
    job = started(enqueue(queue), worker, 1.0)
    worker.hand_back(job, queue, worker.prepare_execution(job))
    assert job.get_status(refresh=True) == JobStatus.QUEUED
    assert fake_redis.hgetall(store.TASKS_ENDED_KEY) == {}


def test_a_success_through_rqs_own_path_is_completed(worker: JobProcessSupervisor, queue: Queue,
                                                     fake_redis: fakeredis.FakeRedis) -> None:
    job = started(enqueue(queue), worker, 0.04)
    job._result = 3
    execution = worker.prepare_execution(job)
    worker.handle_job_success(job, queue, queue.started_job_registry, execution)
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    snapshot = read_snapshot(fake_redis)
    assert snapshot.tasks_ended == {("test.add", "completed"): 1}
    assert snapshot.durations["test.add"].counts[DURATION_BUCKETS.index(0.05)] == 1


def test_a_job_returning_retry_counts_only_when_its_retries_are_used_up(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    job = started(enqueue(queue), worker, 0.1)
    worker.handle_job_retry(job, queue, Retry(max=2), queue.started_job_registry, worker.prepare_execution(job))
    assert fake_redis.hgetall(store.TASKS_ENDED_KEY) == {}
    job = started(Job.fetch(job.id, connection=fake_redis, serializer=JSONSerializer), worker, 0.1)
    job.number_of_retries = 2
    worker.handle_job_retry(job, queue, Retry(max=2), queue.started_job_registry, worker.prepare_execution(job))
    assert job.get_status(refresh=True) == JobStatus.FAILED
    assert read_snapshot(fake_redis).tasks_ended == {("test.add", "failed"): 1}


def test_the_fast_workers_success_batch_counts_in_its_script(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    job = started(enqueue(queue), worker, 0.003)
    execution = worker.prepare_execution(job)
    book = Bookkeeper(fake_redis, [queue], Job, JSONSerializer)
    found = book.run(success_batch(worker, job, execution, 3, 600, now()), None, job.dependents_key)
    assert found is None
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    snapshot = read_snapshot(fake_redis)
    assert snapshot.tasks_ended == {("test.add", "completed"): 1}
    assert sum(snapshot.durations["test.add"].counts) == 1


def test_a_broken_counter_cannot_fail_the_success_batch_or_change_its_answer(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    fake_redis.set(store.TASKS_ENDED_KEY, "not a hash")
    job = started(enqueue(queue), worker, 0.003)
    queue.remove(job.id)  # its worker took it off the queue to start it
    enqueue(queue)
    queued = queue.get_job_ids()
    book = Bookkeeper(fake_redis, [queue], Job, JSONSerializer)
    found = book.run(success_batch(worker, job, worker.prepare_execution(job), 3, 600, now()), [queue])
    assert isinstance(found, Dequeued) and found.job.id == queued[0]  # the answer is the script's own
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    assert fake_redis.hgetall(store.TASK_DURATION_KEY)  # the counts after the broken one still ran


def test_a_success_whose_job_has_dependents_is_left_to_rqs_own_transaction(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    """The batch is not run and no next job is taken: RQ's success path then releases the
    dependents in the transaction that records the success, before the next job."""
    job = started(enqueue(queue), worker, 0.003)
    queued = queue.get_job_ids()
    fake_redis.sadd(job.dependents_key, "a-dependent")
    book = Bookkeeper(fake_redis, [queue], Job, JSONSerializer)
    batch = success_batch(worker, job, worker.prepare_execution(job), 3, 600, now())
    assert book.run(batch, [queue], job.dependents_key) == HAS_DEPENDENTS
    assert Job.fetch(job.id, connection=fake_redis, serializer=JSONSerializer).get_status() == JobStatus.STARTED
    assert queue.get_job_ids() == queued
    assert read_snapshot(fake_redis).tasks_ended == {}


def test_a_broken_counter_cannot_fail_rqs_transaction(worker: JobProcessSupervisor, queue: Queue,
                                                      fake_redis: fakeredis.FakeRedis) -> None:
    fake_redis.set(store.TASKS_ENDED_KEY, "not a hash")
    job = started(enqueue(queue), worker, 0.01)
    job._result = 3
    worker.handle_job_success(job, queue, queue.started_job_registry, worker.prepare_execution(job))
    assert job.get_status(refresh=True) == JobStatus.FINISHED


# --- ends outside the worker's handling: cancelled while waiting, abandoned ---------------------------


def test_a_waiting_task_cancelled_twice_counts_once(queue: Queue, fake_redis: fakeredis.FakeRedis) -> None:
    job = enqueue(queue)
    assert cancel_waiting(job) is True
    assert cancel_waiting(Job.fetch(job.id, connection=fake_redis, serializer=JSONSerializer)) is False
    assert job.get_status(refresh=True) == JobStatus.CANCELED
    assert queue.get_job_ids() == []
    snapshot = read_snapshot(fake_redis)
    assert snapshot.tasks_ended == {("test.add", "cancelled"): 1}
    assert "test.add" not in snapshot.durations  # it never ran


def test_a_task_that_started_meanwhile_is_not_cancelled_as_waiting(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    job = enqueue(queue)
    started(Job.fetch(job.id, connection=fake_redis, serializer=JSONSerializer), worker, 0.1)
    assert cancel_waiting(job) is False
    assert job.get_status(refresh=True) == JobStatus.STARTED
    assert fake_redis.hgetall(store.TASKS_ENDED_KEY) == {}


def test_cancel_through_the_api_counts_a_waiting_task(client: FlaskClient) -> None:
    task_id = submit_ok(client)
    assert client.delete(f"/tasks/{task_id}").status_code == 200
    assert client.delete(f"/tasks/{task_id}").status_code == 409
    assert ended(scrape(client), "test.add", "cancelled") == 1


def test_an_abandoned_task_counts_once_however_many_settle_it(worker: JobProcessSupervisor, queue: Queue,
                                                              fake_redis: fakeredis.FakeRedis) -> None:
    job = started(enqueue(queue), worker, 1.0)
    count_abandoned(job, retried=False)
    count_if_abandoned(job, AbandonedJobError, AbandonedJobError(), None)  # a maintenance pass, too
    count_if_abandoned(job, ValueError, ValueError(), None)  # an ordinary failure: the worker counts it
    snapshot = read_snapshot(fake_redis)
    assert snapshot.tasks_ended == {("test.add", "failed"): 1}
    assert "test.add" not in snapshot.durations  # nobody saw it end


def test_an_abandoned_task_with_a_retry_left_is_no_end(worker: JobProcessSupervisor, queue: Queue,
                                                       fake_redis: fakeredis.FakeRedis) -> None:
    job = started(enqueue(queue, "test.fail", retry=Retry(max=1)), worker, 1.0)
    count_if_abandoned(job, AbandonedJobError, AbandonedJobError(), None)
    assert fake_redis.hgetall(store.TASKS_ENDED_KEY) == {}


def test_the_apis_settlement_of_an_abandoned_task_counts_it(
    client: FlaskClient, worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    task_id = submit_ok(client)
    job = Job.fetch(task_id, connection=fake_redis, serializer=JSONSerializer)
    started(job, worker, 1.0)  # by a worker whose key is gone: this one never registered
    worker.prepare_execution(job)
    fake_redis.delete(worker.key)
    assert job.id in StartedJobRegistry("analysis", connection=fake_redis, serializer=JSONSerializer).get_job_ids()
    assert client.get(f"/tasks/{task_id}").get_json()["status"] == "failed"
    assert client.get(f"/tasks/{task_id}").get_json()["status"] == "failed"
    assert ended(scrape(client), "test.add", "failed") == 1


def test_the_api_leaves_an_abandoned_task_to_a_worker_settling_its_queue_now(
    client: FlaskClient, worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    """One settler at a time (`trustcard.settling`): two of RQ's clean-ups at once would both
    retry a job with retries left, queueing it twice."""
    task_id = submit_ok(client)
    job = Job.fetch(task_id, connection=fake_redis, serializer=JSONSerializer)
    started(job, worker, 1.0)
    worker.prepare_execution(job)
    fake_redis.delete(worker.key)
    with settling(fake_redis, "analysis") as held:
        assert held
        assert client.get(f"/tasks/{task_id}").get_json()["status"] == "started"
    assert client.get(f"/tasks/{task_id}").get_json()["status"] == "failed"
    assert ended(scrape(client), "test.add", "failed") == 1


def test_an_unreadable_job_refused_by_the_worker_counts_failed_as_unknown(
    worker: JobProcessSupervisor, fake_redis: fakeredis.FakeRedis
) -> None:
    pickled = Queue("analysis", connection=fake_redis).enqueue_call("workers.diagnostics.add", kwargs={"x": 1, "y": 1})
    job = Job(pickled.id, connection=fake_redis, serializer=JSONSerializer)
    job.refresh()
    queue = Queue("analysis", connection=fake_redis, serializer=JSONSerializer)
    assert worker.refuse_unreadable(job, queue) is True
    assert job.get_status(refresh=True) == JobStatus.FAILED
    assert read_snapshot(fake_redis).tasks_ended == {("unknown", "failed"): 1}
