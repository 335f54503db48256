"""The dashboard's jobs lists, reading only the page asked for.

rq-dashboard 0.9.0 answers `/rq/<n>/data/jobs/<queue>/<registry>/<per page>/<order>/<page>.json`
with `get_queue_registry_jobs_count`, which for a registry turns the page size into
`offset + per_page - 1` and then reads from `offset` to `offset + that`: page N answers
about N pages of jobs (measured: 10,016 jobs and 2.5 MB for page 1,251 of 8, 22 s), and
its descending order reads the same wrong window from the other end. It then fetches each
job and its latest result with two round trips per job.

`jobs_page` takes its place (`trustcard.api.dashboard` installs it under rq-dashboard's
name, so rq-dashboard's own view still builds the answer and its pagination, same JSON): the
count is one ZCARD or LLEN, the page's ids one ZRANGE or LRANGE of at most `per_page`
entries, and its jobs and their latest results one pipelined round trip. Nothing cleans a
registry here (RQ's clean-up walks the expired entries: workers do that, not page views).
Descending (`dsc`, what the dashboard's page sends, or `desc`) lists the newest first: page
1 is the registry's last entries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rq.exceptions import DeserializationError
from rq.job import Job
from rq.queue import Queue
from rq.registry import (
    BaseRegistry,
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)
from rq.results import Result
from rq.serializers import JSONSerializer

from trustcard.exceptions import NotFound, ValidationFailed

if TYPE_CHECKING:
    from redis import Redis

QUEUED = "queued"
DESCENDING = frozenset({"dsc", "desc"})
"""rq-dashboard's page sends `dsc`; `desc` is what people type."""
REGISTRIES: dict[str, type[BaseRegistry]] = {
    "failed": FailedJobRegistry,
    "deferred": DeferredJobRegistry,
    "started": StartedJobRegistry,
    "finished": FinishedJobRegistry,
    "scheduled": ScheduledJobRegistry,
    "canceled": CanceledJobRegistry,
}


MAX_PER_PAGE = 100
"""The dashboard offers 8 to 100 jobs a page; more would be a read of the whole registry."""


class UnknownRegistry(NotFound):
    """A jobs list for a registry RQ does not have."""

    code = "unknown_registry"


def checked_page(per_page: str, page: str) -> tuple[int, int]:
    """The page size and number from the URL, or a 422 naming the one that is not 1, 2, ..."""
    values = {}
    for name, text, limit in (("per_page", per_page, MAX_PER_PAGE), ("page", page, None)):
        if not text.isdigit() or int(text) < 1 or (limit is not None and int(text) > limit):
            bound = f"between 1 and {limit}" if limit else "a whole number from 1"
            problem = f"must be {bound}"
            raise ValidationFailed(f"The jobs list's {name} {problem}.",
                                   problems=[{"parameter": name, "problem": problem}])
        values[name] = int(text)
    return values["per_page"], values["page"]


def page_ids(
    connection: Redis, queue_name: str, registry_name: str, offset: int, per_page: int, order: str
) -> tuple[int, list[str]]:
    """The number of jobs in the list and the ids on the page that starts at `offset`."""
    descending = order in DESCENDING
    last = offset + per_page - 1
    if registry_name == QUEUED:
        queue = Queue(queue_name, connection=connection, serializer=JSONSerializer)
        with connection.pipeline(transaction=False) as pipeline:
            pipeline.llen(queue.key)
            if descending:
                pipeline.lrange(queue.key, -last - 1, -offset - 1)
            else:
                pipeline.lrange(queue.key, offset, last)
            total, raw = pipeline.execute()
        ids = [item.decode() for item in raw]
        return int(total), ids[::-1] if descending else ids
    registry = _registry(connection, queue_name, registry_name)
    with connection.pipeline(transaction=False) as pipeline:
        pipeline.zcard(registry.key)
        pipeline.zrange(registry.key, offset, last, desc=descending)
        total, raw = pipeline.execute()
    return int(total), [registry.parse_job_id(item) for item in raw]


def _registry(connection: Redis, queue_name: str, registry_name: str) -> BaseRegistry:
    registry_class = REGISTRIES.get(registry_name)
    if registry_class is None:
        known = ", ".join([QUEUED, *REGISTRIES])
        raise UnknownRegistry(f"There is no jobs list {registry_name!r}; the lists are: {known}.")
    return registry_class(queue_name, connection=connection, serializer=JSONSerializer)


def jobs_with_results(connection: Redis, job_ids: list[str]) -> list[tuple[Job, Result | None]]:
    """The jobs still stored among `job_ids`, in order, each with its latest result: their
    hashes in one round trip, then RQ's own `latest_result` for each (wherever results live)."""
    with connection.pipeline(transaction=False) as pipeline:
        for job_id in job_ids:
            pipeline.hgetall(Job.key_for(job_id))
        replies = pipeline.execute()
    found = []
    for job_id, raw in zip(job_ids, replies, strict=True):
        if not raw:
            continue  # expired between the two reads: rq-dashboard skips it too
        job = Job(job_id, connection=connection, serializer=JSONSerializer)
        try:
            job.restore(raw)
        except DeserializationError:
            continue
        found.append((job, job.latest_result()))
    return found


def jobs_page(
    queue_name: str, registry_name: str, offset: int, per_page: int, order: str, connection: Redis
) -> tuple[int, list[dict[str, Any]]]:
    """rq-dashboard's `get_queue_registry_jobs_count`, same arguments and answer, reading only the page."""
    from rq_dashboard.web import format_job_description, serialize_date

    total, ids = page_ids(connection, queue_name, registry_name, offset, per_page, order)
    jobs = [
        {
            "id": job.id,
            "created_at": serialize_date(job.created_at),
            "started_at": serialize_date(job.started_at),
            "ended_at": serialize_date(job.ended_at),
            "exc_info": latest.exc_string if latest else None,
            "description": format_job_description(job),
        }
        for job, latest in jobs_with_results(connection, ids)
    ]
    return total, jobs
