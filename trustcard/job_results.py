"""A finished job's result kept in its own hash, and RQ's result readers taught to find it.

RQ 3 records every end as an entry of a per-job Redis stream (`rq:results:<id>`), and
Redis gives each stream a 4 KB node however small the entry (`stream-node-max-bytes`,
which managed Redis plans do not let users change): 4,744 of the 6,935 bytes a finished
`add` task cost. Our worker's plain successes (`workers.supervisor.batches.success_batch`)
write no stream: the return value goes into the job hash's `result` field, which is
RQ's own older place for it (`Job.restore` still reads it into the job), and the
execution's facts are the job's own fields (`worker_name`, `started_at`, `ended_at`).

Every other end (failures with their exc info, retries, stops, anything RQ's own
success path records) still writes RQ's stream, so the rule for "the latest result" is:
the stream's latest entry when it is a success; otherwise, when the job is finished and
its hash holds a `result`, that one (a success recorded after earlier failed tries);
otherwise the stream's latest entry, or None.

`install()` makes RQ's `Result.fetch_latest`, `Result.all` and `Result.count` follow
that rule, so `Job.latest_result()`, `Job.return_value()` and `Job.results()` (what
rq-dashboard's job pages and JSON call) find lean results too. The web app and our
workers install it; a process that reads jobs through plain RQ without it sees a
finished lean job with no result. No Flask, no job code here.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import rq.utils
from rq.job import JobStatus
from rq.results import Result
from rq.serializers import resolve_serializer

from trustcard import task_events

if TYPE_CHECKING:
    from redis import Redis
    from rq.job import Job

RESULT_FIELD = "result"
"""The job hash field that holds a lean success's return value (serialized, always
present for one, "null" for None)."""
STATUS_FIELD = "status"
_FIELDS = (STATUS_FIELD, RESULT_FIELD, "worker_name", "started_at", "ended_at")
WAIT_SLICE_SECONDS = 0.01
"""While blocking for a result: how often the stream (written by RQ's own ends, which
publish nothing of ours when a stock worker runs them) is looked at again."""

_READERS = ("fetch_latest", "all", "count")
_RQ_READERS = {name: Result.__dict__[name] for name in _READERS}
"""RQ's own classmethods, as the class holds them."""


def from_fields(job_id: str, fields: dict[str, bytes | None], connection: Redis, serializer: Any = None) -> Result | None:
    """The lean success stored in a job hash's `fields` (`_FIELDS` at least), or None."""
    raw = fields.get(RESULT_FIELD)
    if raw is None or fields.get(STATUS_FIELD) != JobStatus.FINISHED.value.encode():
        return None
    ended_at = _moment(fields.get("ended_at"))
    worker = fields.get("worker_name")
    return Result(
        job_id,
        Result.Type.SUCCESSFUL,
        connection=connection,
        id=f"{int(ended_at.timestamp() * 1000)}-0" if ended_at else "0-1",  # what a stream would have numbered it
        created_at=ended_at,
        return_value=resolve_serializer(serializer).loads(raw),
        worker_name=worker.decode() if worker else "",
        serializer=serializer,
        execution_started_at=_moment(fields.get("started_at")),
        execution_ended_at=ended_at,
    )


def latest(job_id: str, hash_fields: dict[bytes, bytes] | dict[str, bytes | None], stream_entries: list[Any],
           connection: Redis, serializer: Any = None) -> Result | None:
    """The latest result by the module's rule, from the job hash (all of it, or `_FIELDS`)
    and the stream's latest entry (XREVRANGE COUNT 1), both already read."""
    streamed = None
    if stream_entries:
        result_id, payload = stream_entries[0]
        streamed = Result.restore(job_id, _text(result_id), payload, connection=connection, serializer=serializer)
        if streamed.type == Result.Type.SUCCESSFUL:
            return streamed
    fields = {_text(name): value for name, value in hash_fields.items()}
    return from_fields(job_id, fields, connection, serializer) or streamed


def read_latest(job: Job, serializer: Any = None, watch_seconds: float | None = None) -> Result | None:
    """The job's latest result in one round trip (its hash's fields and the stream's latest
    entry); with `watch_seconds`, the job's end published for that long from before the read
    (`trustcard.task_events.watch_command`)."""
    with job.connection.pipeline(transaction=False) as pipeline:
        if watch_seconds is not None:
            pipeline.execute_command(*task_events.watch_command(job.id, watch_seconds))
        pipeline.hmget(job.key, _FIELDS)
        pipeline.xrevrange(Result.get_key(job.id), "+", "-", count=1)
        *_, values, entries = pipeline.execute()
    return latest(job.id, dict(zip(_FIELDS, values, strict=True)), entries, job.connection, serializer)


def fetch_latest(cls: type[Result], job: Job, serializer: Any = None, timeout: int = 0) -> Result | None:
    """`Result.fetch_latest`, lean results included. Blocking (`timeout` seconds): woken by
    the end our workers publish (`trustcard.task_events`), the stream looked at every
    `WAIT_SLICE_SECONDS` for ends that publish nothing."""
    serializer = serializer or job.serializer
    found = read_latest(job, serializer)
    if found is not None or not timeout:
        return found
    pubsub = job.connection.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(task_events.channel(job.id))
        deadline = time.monotonic() + timeout
        while True:
            found = read_latest(job, serializer, watch_seconds=task_events.watch_for(WAIT_SLICE_SECONDS))
            remaining = deadline - time.monotonic()
            if found is not None or remaining <= 0:
                return found
            pubsub.get_message(timeout=min(WAIT_SLICE_SECONDS, remaining))
    finally:
        pubsub.close()


def all_results(cls: type[Result], job: Job, serializer: Any = None) -> list[Result]:
    """`Result.all`, newest first, with the lean success first when there is one."""
    serializer = serializer or job.serializer
    streamed: list[Result] = _RQ_READERS["all"].__func__(cls, job, serializer=serializer)
    if streamed and streamed[0].type == Result.Type.SUCCESSFUL:
        return streamed
    lean = from_fields(job.id, dict(zip(_FIELDS, job.connection.hmget(job.key, _FIELDS), strict=True)),
                       job.connection, serializer)
    return [lean, *streamed] if lean is not None else streamed


def count(cls: type[Result], job: Job) -> int:
    """`Result.count`, the lean success counted."""
    return len(all_results(cls, job))


def install() -> None:
    """Point RQ's `Result` readers at the functions above (again is harmless)."""
    for name, ours in zip(_READERS, (fetch_latest, all_results, count), strict=True):
        setattr(Result, name, classmethod(ours))


def uninstall() -> None:
    """RQ's own readers again (for tests)."""
    for name, theirs in _RQ_READERS.items():
        setattr(Result, name, theirs)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _moment(value: bytes | None) -> datetime | None:
    if not value:
        return None
    return rq.utils.utcparse(value.decode()).replace(tzinfo=timezone.utc)
