"""The commands that start and end a job, as RQ's own methods write them, into a batch.

`bookkeeping.Bookkeeper` sends them to Redis in one script call each (see there why).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol

from rq.defaults import UNSERIALIZABLE_RETURN_VALUE_PAYLOAD
from rq.executions import Execution
from rq.job import Job, JobStatus, Retry
from rq.serializers import JSONSerializer, resolve_serializer
from rq.worker import WorkerStatus

from trustcard import job_results, rq_seams
from trustcard.metrics.outcomes import TaskOutcome
from trustcard.rq_speedups import utcformat
from trustcard.task_ends import job_end_commands
from workers.supervisor.bookkeeping import CommandBatch


class BatchWorker(Protocol):
    """What the batches need of the worker: RQ's own methods that write its state."""

    name: str

    def set_state(self, state: str, pipeline: Any = None) -> None: ...

    def increment_successful_job_count(self, pipeline: Any = None) -> None: ...

    def increment_total_working_time(self, job_execution_time: timedelta, pipeline: Any) -> None: ...


def start_batch(worker: BatchWorker, job: Job, heartbeat_ttl: int, intermediate_key: str | None) -> tuple[
    CommandBatch, Execution
]:
    """The commands that start `job`: RQ's `prepare_execution` + `prepare_job_execution`,
    without the worker heartbeat (the supervisor keeps that) and the second job heartbeat."""
    batch = CommandBatch()
    execution = Execution.create(job, heartbeat_ttl, pipeline=batch, worker_name=worker.name)  # type: ignore[arg-type]
    worker.set_state(WorkerStatus.BUSY, pipeline=batch)  # type: ignore[arg-type]
    job.prepare_for_execution(worker.name, batch)  # type: ignore[arg-type]
    batch.persist(job.key)
    if intermediate_key is not None:
        batch.lrem(intermediate_key, 1, job.id)
    return batch, execution


def plain_success(job: Job, return_value: Any, result_ttl: int) -> bool:
    """True when finishing `job` needs nothing beyond `success_batch`. Only JSON jobs: our
    workers read no other kind, but RQ's contract suite runs ours on pickled jobs, whose
    results (bytes) cannot travel in the batch's JSON; those end through RQ's own code."""
    return (
        result_ttl != 0
        and _is_json(job.serializer)  # text: the lean result goes in the hash as it is
        and not isinstance(return_value, Retry)
        and not rq_seams.has_success_callback(job)
        and not job.webhooks
        and job.repeats_left is None
        and not job.has_rate_limit
    )


@lru_cache(maxsize=8)
def _is_json(serializer: Any) -> bool:
    """`resolve_serializer(serializer) is JSONSerializer`, once per serializer: RQ's check of
    its serializer protocol is a runtime-checkable isinstance, about 20 us, on every job."""
    return resolve_serializer(serializer) is JSONSerializer


def success_batch(
    worker: BatchWorker, job: Job, execution: Execution, return_value: Any, result_ttl: int, ended_at: datetime
) -> CommandBatch:
    """What RQ's `handle_job_success` writes for a plain job without dependents (`run`
    checks that in the same atomic script: a dependent enqueued later sees this job
    finished), and its count for /metrics (best effort), stored lean: the return value in
    the job hash instead of a result stream of its own, and the hash written anew without
    its empty fields (see `trustcard.job_results`, which RQ's readers go through)."""
    job.ended_at = ended_at
    job.last_heartbeat = ended_at
    rq_seams.mark_finished(job, return_value)
    stamp = utcformat(ended_at)
    assert job.started_at is not None
    batch = CommandBatch()
    batch.rewrite_hash(job.key, {
        "status": JobStatus.FINISHED.value, "ended_at": stamp, "last_heartbeat": stamp,
        job_results.RESULT_FIELD: _serialized(job, return_value), **lean_meta_fields(job),
        **dict.fromkeys(FINISHED_DROPPED, ""),
    })
    job.finished_job_registry.add(job, result_ttl, batch)  # type: ignore[arg-type]
    job.cleanup(result_ttl, pipeline=batch, remove_from_queue=False)  # type: ignore[arg-type]
    execution.delete(job=job, pipeline=batch)  # type: ignore[arg-type]
    worker.increment_successful_job_count(pipeline=batch)  # type: ignore[arg-type]
    worker.increment_total_working_time(ended_at - job.started_at, batch)  # type: ignore[arg-type]
    worker.set_state(WorkerStatus.IDLE, pipeline=batch)  # type: ignore[arg-type]
    batch.best_effort.extend(job_end_commands(job, TaskOutcome.COMPLETED))
    batch.guard = (job.key, worker.name)  # a late end (its worker was cut off) writes nothing
    return batch


def lean_meta_fields(job: Job) -> dict[str, str]:
    """The finished job's meta without what no reader of a finished job asks for
    (`LEAN_META_DROPPED`) and without empty entries, in compact JSON: at most 64 bytes for a
    typical task, so that the hash stays a listpack (Redis' `hash-max-listpack-value`)."""
    kept = {name: value for name, value in (job.meta or {}).items()
            if name not in LEAN_META_DROPPED and value is not None}
    return {"meta": json.dumps(kept, separators=(",", ":")) if kept else ""}


FINISHED_DROPPED = ("failure_ttl",)
"""Job fields no reader of a finished job needs: how long a failure would be kept. Read as
None afterwards. `last_heartbeat` stays (set to the end): RQ's `maintain_heartbeats` takes an
HSET of it that adds the field for a sign that the job was deleted meanwhile, and deletes the
job hash (rq issue 1450). The supervisor heartbeats a job running over 2 s, and one heartbeat
sent as the job process ends lands after this rewrite: without the field, the finished task
was deleted and answered 404 (found by the chaos soak, scripts/chaos.py)."""
LEAN_META_DROPPED = ("hard_timeout", "request_id")
"""Read only while the job runs and as it ends, before this rewrite: the hard limit (the
supervisor kills the job process at it) and the request id (bound to the job's log lines,
and put in its webhook's delivery job). The log lines keep the request id with the task id."""


def _serialized(job: Job, return_value: Any) -> str:
    """The return value as RQ's `Result` would serialize it (unserializable: RQ's placeholder)."""
    try:
        data = job.serializer.dumps(return_value)
    except Exception:  # noqa: BLE001 - as RQ's Result.serialize
        data = job.serializer.dumps(UNSERIALIZABLE_RETURN_VALUE_PAYLOAD)
    return data.decode() if isinstance(data, bytes) else str(data)
