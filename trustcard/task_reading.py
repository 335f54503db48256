"""One task read from Redis in one round trip: its job hash, its latest result stream entry
and, for a started task, whether its worker is still alive.

Clients poll `GET /tasks/<id>` and `?wait` reads a task each time it is woken: this is the
API's hot path. A started task's view needs its worker's liveness (a task whose worker is
gone will never end by itself, so the read settles it: `TaskService._settle_if_abandoned`),
and the worker's name is only in the hash, so a plain pipeline would need a second round
trip for it. Here the pipeline carries a small script that looks up the worker only when the
hash says `started`. The hash and the stream entry are read by plain commands beside it, not
inside the script: Redis copies a reply through Lua at some cost (a read of a finished task's
hash through a script took 62-81 us of Redis CPU against 39-42 us for the pipeline, measured).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rq.results import Result
from rq.worker import Worker

from trustcard.task_events import watch_command

if TYPE_CHECKING:
    from redis import Redis

WORKER_ALIVE_SCRIPT = """
local state = redis.call('HMGET', KEYS[1], 'status', 'worker_name')
if state[1] == 'started' and state[2] then return redis.call('EXISTS', ARGV[1] .. state[2]) end
return -1
"""
# KEYS: the job hash. ARGV: the worker key prefix. 1 or 0 for a started job's worker key
# (-1: not started, or no worker named). Sent as EVAL, not EVALSHA: a pipeline cannot recover
# from a NOSCRIPT (after a Redis restart) without another round trip, and Redis caches the
# script's compiled form by its digest either way.


@dataclass
class TaskRecord:
    """What one read found: the job hash ({} when the job is gone), the result stream's
    latest entry as redis-py parses XREVRANGE (`[(id, {field: value})]`), and for a started
    task whether its worker's key exists (None: the task is not started)."""

    raw: dict[bytes, bytes]
    results: list[tuple[bytes, dict[bytes, bytes]]]
    worker_alive: bool | None


def read_task(connection: Redis, job_key: str, job_id: str, watch_seconds: float | None = None) -> TaskRecord:
    """The task's record, in one round trip; with `watch_seconds`, the task watched for that
    long first (`trustcard.task_events.watch_command`: a waiter's read)."""
    with connection.pipeline(transaction=False) as pipeline:
        if watch_seconds is not None:
            pipeline.execute_command(*watch_command(job_id, watch_seconds))
        pipeline.hgetall(job_key)
        pipeline.xrevrange(Result.get_key(job_id), "+", "-", count=1)
        pipeline.eval(WORKER_ALIVE_SCRIPT, 1, job_key, Worker.redis_worker_namespace_prefix)
        *_, raw, results, alive = pipeline.execute()
    return TaskRecord(raw, results, None if alive == -1 else bool(alive))
