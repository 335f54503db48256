"""Tasks whose worker vanished (killed outright, or its host cut off), settled within about a minute.

Such a task stays `started` until something runs RQ's started-registry clean-up, which
fails it as abandoned, or retries it by its policy, once its last heartbeat is older than
the entry's TTL (65 s while busy). RQ runs that clean-up in a worker's maintenance pass,
every 10 minutes by default; the API's status read does it early, but only for a task
someone reads. A task nobody polls (an analysis stage, a task with a webhook) would wait the
10 minutes. So each supervisor runs the clean-up of its queues every `CHECK_SECONDS`: a
range read of one sorted set per queue when nothing is abandoned.

RQ's clean-up is not atomic: two settling the same expired entry at once would both retry
it, queueing the job twice. So it runs under the queue's settling lock, which the API's
status read takes too (`trustcard.settling`); a worker that finds it taken skips the queue
this time.

Under the same lock it also puts back jobs taken off a queue and never started: each job
taken waits in its queue's intermediate list until its start takes it out (`bookkeeping`), so a
worker killed, or a failover that kept the take and lost the start, leaves it there reading
`queued`, on no queue. One seen there in two checks `TAKEN_GRACE_SECONDS` apart goes back to
the front of its queue: a live worker starts what it took within milliseconds, and a copy put
back of a job its taker did start is skipped when taken again, so a job put back runs once.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from rq.registry import StartedJobRegistry

from trustcard.catalogue import ANALYSIS_STAGE
from trustcard.metrics.ends import count_if_abandoned
from trustcard.settling import settling

if TYPE_CHECKING:
    from rq.job import Job
    from rq.queue import Queue
    from rq.worker import Worker

log = logging.getLogger("rq.worker")  # the worker's own log (its handlers: trustcard.logs)

CHECK_SECONDS = 15.0
"""How often a supervisor looks for abandoned tasks on its queues."""
TAKEN_GRACE_SECONDS = 10.0
"""How long a job must have sat taken and not started, seen by one checker, before it is put back."""

_PUT_BACK = """
local status = redis.call('HGET', KEYS[3], 'status')
if status and status ~= 'queued' and status ~= 'created' then
  redis.call('LREM', KEYS[1], -1, ARGV[1])
  return 0
end
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 0 then return 0 end
if status then redis.call('LPUSH', KEYS[2], ARGV[1]) return 1 end
return 0
"""
# KEYS: the intermediate list, the queue, the job's hash; ARGV: the job id. A job that started
# or ended meanwhile, or whose hash is gone, only leaves the intermediate list.


def settle_abandoned(worker: Worker, taken_seen: dict[str, float] | None = None) -> list[str]:
    """Run RQ's started-registry clean-up on each of `worker`'s queues whose settling lock is
    free, and put back what sat taken and never started (`put_back_taken`, remembering in
    `taken_seen` when this checker first saw each); returns the names of the queues it checked."""
    checked = []
    for queue in worker.queues:
        with settling(worker.connection, queue.name) as ours:
            if not ours:
                continue
            registry = StartedJobRegistry(
                queue.name, connection=worker.connection, job_class=worker.job_class, serializer=worker.serializer
            )
            registry.cleanup(exception_handlers=[count_if_abandoned, _follow_if_abandoned])
            if taken_seen is not None:
                put_back_taken(worker, queue, taken_seen)
        checked.append(queue.name)
    return checked


def _follow_if_abandoned(job: Job, *exc_info: Any) -> None:
    """`stage_failures.follow_if_abandoned`, imported (with the database layer) only for a stage job."""
    if (job.meta or {}).get("job_type") == ANALYSIS_STAGE.name:
        from workers.stage_failures import follow_if_abandoned

        follow_if_abandoned(job, *exc_info)


def put_back_taken(worker: Worker, queue: Queue, seen: dict[str, float], moment: float | None = None) -> list[str]:
    """Jobs in `queue`'s intermediate list that `seen` says sat there `TAKEN_GRACE_SECONDS` or
    more go back to the queue's front; the others are remembered. Returns the ids put back.
    One LRANGE of a list that holds the few jobs being started right now."""
    moment = time.monotonic() if moment is None else moment
    key = queue.intermediate_queue_key
    prefix = f"{key}|"
    present = {raw.decode() for raw in worker.connection.lrange(key, 0, -1)}
    for entry in [entry for entry in seen if entry.startswith(prefix) and entry[len(prefix):] not in present]:
        del seen[entry]  # started (or put back) since
    put_back = []
    for job_id in sorted(present):
        first = seen.setdefault(prefix + job_id, moment)
        if moment - first < TAKEN_GRACE_SECONDS:
            continue
        del seen[prefix + job_id]
        if worker.connection.eval(_PUT_BACK, 3, key, queue.key, worker.job_class.key_for(job_id), job_id):
            log.warning("task %s: taken off queue %s and never started; put back on it", job_id, queue.name)
            put_back.append(job_id)
    return put_back
