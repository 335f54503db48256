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
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rq.registry import StartedJobRegistry

from trustcard.metrics.ends import count_if_abandoned
from trustcard.settling import settling

if TYPE_CHECKING:
    from rq.worker import Worker

log = logging.getLogger("rq.worker")  # the worker's own log (its handlers: trustcard.logs)

CHECK_SECONDS = 15.0
"""How often a supervisor looks for abandoned tasks on its queues."""


def settle_abandoned(worker: Worker) -> list[str]:
    """Run RQ's started-registry clean-up on each of `worker`'s queues whose settling lock is
    free; returns the names of the queues it checked."""
    checked = []
    for queue in worker.queues:
        with settling(worker.connection, queue.name) as ours:
            if not ours:
                continue
            registry = StartedJobRegistry(
                queue.name, connection=worker.connection, job_class=worker.job_class, serializer=worker.serializer
            )
            registry.cleanup(exception_handlers=[count_if_abandoned])
        checked.append(queue.name)
    return checked
