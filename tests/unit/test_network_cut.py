"""A worker cut off from Redis for longer than its key lives, then back: on fakeredis.

Meanwhile its running task was settled without it (failed as abandoned by the status check,
or retried and started by another worker). When the link returns, nothing it sends may undo
that: not its late "finished", not a heartbeat that puts its execution back in the started
registry, not the outage recovery's "Redis lost". And it registers again, whole. The live
workers settle a vanished worker's task (`workers.supervisor.abandoned`), whether anyone
reads it or not. The real cut, with network namespaces, is `tests/integration/test_many_hosts.py`.
"""

from __future__ import annotations

import fakeredis
import pytest
from rq import Queue, get_current_job, worker_registration
from rq.job import Job, JobStatus, Retry
from rq.serializers import JSONSerializer
from rq.utils import now

from tests.unit.test_metrics import enqueue, started
from trustcard.settling import settling
from tests.unit.test_worker_contract import ADD, run_burst
from workers import job as catalogue_job
from workers.supervisor import JobProcessSupervisor
from workers.supervisor.abandoned import settle_abandoned
from workers.supervisor.batches import success_batch
from workers.supervisor.bookkeeping import Bookkeeper, Dequeued

OTHER_WORKER = "the-other-host-worker"
TAKEN_OVER = f"{__name__}.taken_over_then"


def taken_over_then(outcome: str) -> str:
    """A job that, while it runs here, is settled and retried by the live workers and started
    by another one (what a network cut longer than its heartbeat leads to), then ends here."""
    job = get_current_job()
    assert job is not None
    with job.connection.pipeline() as pipeline:
        Job.fetch(job.id, connection=job.connection, serializer=JSONSerializer).prepare_for_execution(
            OTHER_WORKER, pipeline
        )
        pipeline.execute()
    if outcome == "raise":
        raise RuntimeError("a failure that arrives late")
    return "a result that arrives late"


def fetch(job: Job) -> Job:
    return Job.fetch(job.id, connection=job.connection, serializer=JSONSerializer)


def settled_as_abandoned(job: Job) -> None:
    """What the status check leaves: failed, out of the started registry."""
    entries = job.connection.zrange(job.started_job_registry.key, 0, -1)
    if entries:
        job.connection.zrem(job.started_job_registry.key, *entries)
    job.set_status(JobStatus.FAILED)


def test_a_late_end_of_a_task_settled_as_abandoned_writes_nothing(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    job = started(enqueue(queue), worker, 90)
    fake_redis.lrem(queue.key, 0, job.id)  # taken off the queue when it started
    execution = worker.prepare_execution(job)
    settled_as_abandoned(job)
    waiting = enqueue(queue)
    book = Bookkeeper(fake_redis, [queue], Job, JSONSerializer)
    found = book.run(success_batch(worker, job, execution, 3, 600, now()), [queue])
    assert book.refused == JobStatus.FAILED.value
    assert fetch(job).get_status() == JobStatus.FAILED
    assert fetch(job).latest_result() is None
    assert job.id not in queue.finished_job_registry.get_job_ids()
    assert isinstance(found, Dequeued) and found.job.id == waiting.id  # the worker carries on


def test_a_late_end_of_a_task_retried_and_started_by_another_worker_writes_nothing(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    job = started(enqueue(queue), worker, 90)
    execution = worker.prepare_execution(job)
    with fake_redis.pipeline() as pipeline:
        fetch(job).prepare_for_execution(OTHER_WORKER, pipeline)
        pipeline.execute()
    book = Bookkeeper(fake_redis, [queue], Job, JSONSerializer)
    assert book.run(success_batch(worker, job, execution, 3, 600, now()), None) is None
    assert book.refused == JobStatus.STARTED.value
    again = fetch(job)
    assert (again.get_status(), again.worker_name, again.latest_result()) == (JobStatus.STARTED, OTHER_WORKER, None)


def test_an_end_in_time_is_written_and_refuses_nothing(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    job = started(enqueue(queue), worker, 0.01)
    book = Bookkeeper(fake_redis, [queue], Job, JSONSerializer)
    book.run(success_batch(worker, job, worker.prepare_execution(job), 3, 600, now()), None)
    assert book.refused is None
    assert fetch(job).get_status() == JobStatus.FINISHED


def test_the_outage_recovery_leaves_a_task_another_worker_runs_now_alone(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    job = started(enqueue(queue), worker, 90)
    with fake_redis.pipeline() as pipeline:
        fetch(job).prepare_for_execution(OTHER_WORKER, pipeline)
        pipeline.execute()
    worker.recover_after_outage(job, queue)
    assert fetch(job).get_status() == JobStatus.STARTED


def test_the_outage_recovery_still_fails_its_own_task_left_started(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    job = started(enqueue(queue), worker, 90)
    worker.recover_after_outage(job, queue)
    assert fetch(job).get_status() == JobStatus.FAILED


def test_no_heartbeat_for_a_task_settled_without_the_worker(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    """Were the execution put back in the started registry, a later clean-up would fail the
    settled task a second time (RQ's job heartbeat updates only entries that still exist)."""
    worker.register_birth()
    job = started(enqueue(queue), worker, 90)
    execution = worker.prepare_execution(job)
    settled_as_abandoned(job)
    worker.keep_heartbeats(job, execution)
    assert fake_redis.zcard(queue.started_job_registry.key) == 0
    assert fetch(job).get_status() == JobStatus.FAILED
    assert fake_redis.ttl(worker.key) > 0  # the worker itself is still kept alive


def test_a_busy_worker_whose_key_expired_during_a_cut_registers_again_whole(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    """RQ's busy heartbeat writes the key back, but not the worker's place in the workers' set,
    which a reader of the set (`Worker.all()`, the dashboard) cleaned meanwhile: it would run
    jobs that no reader of the set sees."""
    worker.register_birth()
    job = started(enqueue(queue), worker, 30)
    execution = worker.prepare_execution(job)
    fake_redis.delete(worker.key)  # expired while it could not reach Redis
    worker_registration.clean_worker_registry(queue)  # what a reader of the set does then
    worker.keep_heartbeats(job, execution)
    assert fake_redis.sismember(worker_registration.REDIS_WORKER_KEYS, worker.key)
    assert fake_redis.hget(worker.key, "queues") == b"analysis"
    assert 0 < fake_redis.ttl(worker.key) <= worker.job_monitoring_interval + 60
    assert job.id in queue.started_job_registry.get_job_ids()  # its own job still has its heartbeat


def test_an_idle_worker_whose_key_expired_during_a_cut_registers_again_whole(
    worker: JobProcessSupervisor, fake_redis: fakeredis.FakeRedis
) -> None:
    """The workers' set still lists it (nobody cleaned it yet); RQ's heartbeat alone would
    leave a key of one field, with no queues and no state."""
    worker.register_birth()
    fake_redis.delete(worker.key)
    worker.heartbeat()
    assert fake_redis.hget(worker.key, "queues") == b"analysis"
    assert fake_redis.ttl(worker.key) > 0


# --- the tasks of a vanished worker, settled by the live ones -----------------------------------


def vanished_while_running(job: Job, worker: JobProcessSupervisor) -> None:
    """`job` started by `worker`, whose last heartbeat is now older than the entry's TTL."""
    worker.prepare_execution(job)
    registry = job.started_job_registry
    entries = job.connection.zrange(registry.key, 0, -1)
    job.connection.zadd(registry.key, {entry: 1 for entry in entries}, xx=True)


def left_by_a_vanished_worker(queue: Queue, fake_redis: fakeredis.FakeRedis, job: Job) -> Job:
    """`job` taken off its queue and started by a worker named "gone", which then vanished."""
    gone = JobProcessSupervisor([queue], connection=fake_redis, name="gone")
    job = started(job, gone, 120)
    fake_redis.lrem(queue.key, 0, job.id)
    vanished_while_running(job, gone)
    return job


def test_a_live_worker_fails_the_task_of_a_vanished_one_as_abandoned(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    job = left_by_a_vanished_worker(queue, fake_redis, enqueue(queue))
    assert settle_abandoned(worker) == ["analysis"]
    assert fetch(job).get_status() == JobStatus.FAILED
    latest = fetch(job).latest_result()
    assert latest is not None and "AbandonedJobError" in (latest.exc_string or "")


def test_a_task_with_retries_left_is_queued_again_once_though_two_workers_check(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    job = left_by_a_vanished_worker(queue, fake_redis, enqueue(queue, "test.fail", retry=Retry(max=1)))
    other = JobProcessSupervisor([queue], connection=fake_redis, name="other-live-worker")
    assert settle_abandoned(worker) == ["analysis"]
    assert settle_abandoned(other) == ["analysis"]
    assert queue.get_job_ids() == [job.id]
    assert fetch(job).get_status() == JobStatus.QUEUED


def test_a_worker_skips_a_queue_another_settler_is_settling(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    """RQ's clean-up is not atomic: two at once on one entry would both retry the job."""
    job = left_by_a_vanished_worker(queue, fake_redis, enqueue(queue))
    with settling(fake_redis, queue.name) as held:  # the API's status read, say
        assert held
        assert settle_abandoned(worker) == []
        assert fetch(job).get_status() == JobStatus.STARTED
    assert settle_abandoned(worker) == ["analysis"]
    assert fetch(job).get_status() == JobStatus.FAILED


def test_a_task_whose_worker_still_heartbeats_is_left_running(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    job = started(enqueue(queue), worker, 120)
    worker.prepare_execution(job)  # its entry lives 65 s from its last heartbeat: now
    settle_abandoned(worker)
    assert fetch(job).get_status() == JobStatus.STARTED


def test_the_worker_knows_whether_a_task_is_still_its_own(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    """What RQ's own end paths (a failure, callbacks, dependents) ask before they write."""
    job = started(enqueue(queue), worker, 90)
    assert worker.settled_without_me(job) is None
    settled_as_abandoned(job)
    assert worker.settled_without_me(job) == JobStatus.FAILED.value
    with fake_redis.pipeline() as pipeline:
        fetch(job).prepare_for_execution(OTHER_WORKER, pipeline)
        pipeline.execute()
    assert worker.settled_without_me(job) == JobStatus.STARTED.value
    fake_redis.delete(job.key)
    assert worker.settled_without_me(job) == "gone"


@pytest.mark.parametrize("outcome", ["return", "raise"])
def test_a_job_process_whose_task_was_taken_over_records_no_end_over_it(
    worker: JobProcessSupervisor, queue: Queue, monkeypatch: pytest.MonkeyPatch, outcome: str
) -> None:
    """Its success through the script's guard, its failure through RQ's path after the check."""
    monkeypatch.setitem(catalogue_job.BY_FUNCTION, TAKEN_OVER, catalogue_job.BY_FUNCTION[ADD])
    job = queue.enqueue_call(TAKEN_OVER, kwargs={"outcome": outcome})
    run_burst(worker)
    again = fetch(job)
    assert (again.get_status(), again.worker_name, again.latest_result()) == (JobStatus.STARTED, OTHER_WORKER, None)


def test_a_task_cancelled_while_it_runs_here_is_still_this_workers_to_end(
    worker: JobProcessSupervisor, queue: Queue, fake_redis: fakeredis.FakeRedis
) -> None:
    """RQ's contract: `job.cancel()` on a running job does not stop it, and its end is recorded
    (its dependents stay deferred); only a task settled or taken over without us is refused."""
    job = started(enqueue(queue), worker, 1)
    execution = worker.prepare_execution(job)
    fetch(job).set_status(JobStatus.CANCELED)
    assert worker.settled_without_me(job) is None
    book = Bookkeeper(fake_redis, [queue], Job, JSONSerializer)
    book.run(success_batch(worker, job, execution, 3, 600, now()), None)
    assert book.refused is None
    assert fetch(job).return_value() == 3
