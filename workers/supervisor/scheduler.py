"""RQ's scheduler, run inside the supervisor's own loop rather than in a process of its own.

`rq worker --with-scheduler` forks a scheduler process (it moves delayed retries and
scheduled jobs onto their queues). That process cost a worker about 20 MB of PSS (its
collector and allocator write over most of the pages it shares with the worker), for a
second of sleep between a few Redis calls. The supervisor already wakes every half
second, so it does the scheduler's rounds itself (`InProcessScheduler.tick`): nothing
to fork, nothing to outlive a SIGKILLed worker, nothing to revive after a Redis outage.

Locks are RQ's: one per queue, held by one worker's scheduler, refreshed each round with
a TTL of `interval + 60` s. A worker that dies without releasing them (SIGKILL) holds
them until that TTL runs out; every other worker tries to take missing locks every
`LOCK_CHECK_SECONDS` (stock RQ: at its maintenance, every 10 minutes).
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.scheduler import RQScheduler
from rq.worker import BaseWorker

from trustcard import rq_seams

log = logging.getLogger("rq.worker")  # the worker's own log (its handlers: trustcard.logs)

LOCK_CHECK_SECONDS = 15.0
"""How often a worker without every scheduler lock tries to take the missing ones."""


class InProcessScheduler(RQScheduler):
    """`RQScheduler` whose rounds the supervisor runs (`tick`); `start` forks nothing."""

    _next_round = 0.0
    _next_lock_check = 0.0
    _redis_down = False

    def start(self) -> None:  # type: ignore[override] - no process to return
        """Called by RQ once locks are won (also from its maintenance): register, fork nothing."""
        rq_seams.mark_scheduler_started(self)
        self.register_birth()

    def tick(self, moment: float) -> None:
        """One round if one is due: take missing locks now and then, refresh those held,
        move due jobs onto their queues. A Redis error (down, out of memory) waits for the
        next round: it must not end the worker, as it ended RQ's scheduler process."""
        if moment < self._next_round:
            return
        self._next_round = moment + self.interval
        try:
            if self.acquired_locks != rq_seams.scheduler_queue_names(self) and moment >= self._next_lock_check:
                self._next_lock_check = moment + LOCK_CHECK_SECONDS
                had = set(self.acquired_locks)
                self.acquire_locks()
                if self.acquired_locks and not had:
                    self.start()
            if self.acquired_locks:
                self.heartbeat()
                self.enqueue_scheduled_jobs()
            if self._redis_down:
                self._redis_down = False
                log.info("scheduler: Redis answers again")
        except RedisError as error:
            if not self._redis_down:
                self._redis_down = True
                log.warning("scheduler: Redis refused or unreachable, retrying every %s s (%s)", self.interval, error)

    def stop(self) -> None:
        """Release the locks (another worker's scheduler takes over) and deregister."""
        if not self.acquired_locks:
            return
        try:
            super().stop()
        except RedisError as error:
            log.warning("scheduler: locks not released, Redis unreachable (%s); they expire", error)


def start_scheduler(
    worker: BaseWorker,
    burst: bool = False,
    logging_level: str | None = "INFO",
    date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
    log_format: str = DEFAULT_LOGGING_FORMAT,
) -> None:
    """As RQ's `_start_scheduler`, with an `InProcessScheduler`; its first round runs now."""
    if burst:  # RQ runs the scheduler once in this process
        rq_seams.start_rq_scheduler(worker, burst, logging_level, date_format, log_format)
        return
    scheduler = InProcessScheduler(
        worker.queues,
        connection=worker.connection,
        logging_level=logging_level if logging_level is not None else worker.log.level,
        date_format=date_format,
        log_format=log_format,
        serializer=worker.serializer,
    )
    worker.scheduler = scheduler
    scheduler.tick(time.monotonic())
