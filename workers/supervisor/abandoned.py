"""Tasks whose worker vanished (killed outright, or its host cut off), settled within about a minute.

Such a task stays `started` until something runs RQ's started-registry clean-up, which
fails it as abandoned, or retries it by its policy, once its last heartbeat is older than
the entry's TTL (65 s while busy). RQ runs that clean-up in a worker's maintenance pass,
every 10 minutes by default; the API's status read does it early, but only for a task
someone reads. A task nobody polls (an analysis stage, a task with a webhook) would wait the
10 minutes. So each supervisor runs the clean-up of its queues every `CHECK_SECONDS`: a
range read of one sorted set per queue when nothing is abandoned.

At most one worker per queue runs it per period (a lock with that expiry): RQ's clean-up is
not atomic, and two workers settling the same expired entry at once would both retry it,
queueing the job twice.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rq.registry import StartedJobRegistry

from trustcard.metrics.ends import count_if_abandoned

if TYPE_CHECKING:
    from rq.worker import Worker

log = logging.getLogger("rq.worker")  # the worker's own log (its handlers: trustcard.logs)

CHECK_SECONDS = 15.0
"""How often a supervisor looks for abandoned tasks on its queues."""
LOCK_PREFIX = "trustcard:abandoned-check:"
"""Per queue: the worker that runs this period's check."""


def settle_abandoned(worker: Worker) -> list[str]:
    """Run RQ's started-registry clean-up on each of `worker`'s queues that no other worker
    checked this period; returns the names of the queues it checked."""
    checked = []
    for queue in worker.queues:
        if not worker.connection.set(LOCK_PREFIX + queue.name, worker.name, nx=True, ex=int(CHECK_SECONDS)):
            continue
        registry = StartedJobRegistry(
            queue.name, connection=worker.connection, job_class=worker.job_class, serializer=worker.serializer
        )
        registry.cleanup(exception_handlers=[count_if_abandoned])
        checked.append(queue.name)
    return checked
