"""RQ's scheduler process, tied to the worker that started it, and revived when it exits.

`rq worker --with-scheduler` forks a scheduler process (it moves delayed retries and
scheduled jobs onto their queues). If the worker is SIGKILLed, RQ's scheduler carries on
as an orphan for ever: still holding the scheduler lock, still moving jobs, supervised by
nobody. This one asks Linux for a SIGTERM when its worker dies, which RQ's own handler
turns into a clean stop that releases the lock for the next worker's scheduler.

RQ's scheduler process also exits on any Redis error, and stock RQ starts it again only
at its next maintenance, up to 10 minutes later; `revive` starts it within moments.
"""

from __future__ import annotations

import logging
import os
import signal
from multiprocessing.process import BaseProcess

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.scheduler import RQScheduler
from rq.worker import BaseWorker

from trustcard import rq_seams
from workers.supervisor.process import die_with_parent

log = logging.getLogger("rq.worker")  # the worker's own log (its handlers: trustcard.logs)

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)


class SupervisedScheduler(RQScheduler):
    """`RQScheduler` whose process stops when the process that started it dies."""

    _parent_pid: int = 0

    def start(self) -> BaseProcess:
        self._parent_pid = os.getpid()  # the worker; read in the scheduler process, after the fork
        process: BaseProcess = super().start()
        return process

    def work(self) -> None:
        die_with_parent(self._parent_pid, signal.SIGTERM)
        super().work()


class SchedulerKeeper:
    """Notices an exited scheduler process and starts it again (if the lock can be had)."""

    def __init__(self, worker_name: str) -> None:
        self.worker_name = worker_name
        self._reported_pid: int | None = None

    def revive(self, scheduler: RQScheduler | None, stopping: bool) -> None:
        process = rq_seams.scheduler_process(scheduler)
        if scheduler is None or process is None or process.is_alive():  # is_alive() also reaps an exited one
            return
        if stopping:  # a deploy's SIGTERM reached it too: it is meant to be gone
            return
        if process.pid != self._reported_pid:
            self._reported_pid = process.pid
            log.warning("worker %s: scheduler process exited (code %s); starting it again", self.worker_name,
                        process.exitcode)
        try:
            scheduler.acquire_locks(auto_start=True)
        except REDIS_DOWN as error:
            log.warning("scheduler not restarted yet, Redis unreachable (%s)", error)


def start_scheduler(
    worker: BaseWorker,
    burst: bool = False,
    logging_level: str | None = "INFO",
    date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
    log_format: str = DEFAULT_LOGGING_FORMAT,
) -> None:
    """As RQ's `_start_scheduler`, with a `SupervisedScheduler`."""
    if burst:  # RQ runs the scheduler once in this process: nothing to supervise
        rq_seams.start_rq_scheduler(worker, burst, logging_level, date_format, log_format)
        return
    worker.scheduler = SupervisedScheduler(
        worker.queues,
        connection=worker.connection,
        logging_level=logging_level if logging_level is not None else worker.log.level,
        date_format=date_format,
        log_format=log_format,
        serializer=worker.serializer,
    )
    worker.scheduler.acquire_locks()
    if worker.scheduler.acquired_locks:
        worker.scheduler.start()
