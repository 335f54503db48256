"""RQ's scheduler process, tied to the worker that started it.

`rq worker --with-scheduler` forks a scheduler process (it moves delayed retries and
scheduled jobs onto their queues). If the worker is SIGKILLed, RQ's scheduler carries on
as an orphan for ever: still holding the scheduler lock, still moving jobs, supervised by
nobody. This one asks Linux for a SIGTERM when its worker dies, which RQ's own handler
turns into a clean stop that releases the lock for the next worker's scheduler.
"""

from __future__ import annotations

import os
import signal
from multiprocessing.process import BaseProcess

from rq.scheduler import RQScheduler

from workers.fast.horse import die_with_parent


class SupervisedScheduler(RQScheduler):
    """`RQScheduler` whose process stops when the process that started it dies."""

    _parent_pid: int = 0

    def start(self) -> BaseProcess:
        self._parent_pid = os.getpid()  # the worker; read in the child, after the fork
        process: BaseProcess = super().start()
        return process

    def work(self) -> None:
        die_with_parent(self._parent_pid, signal.SIGTERM)
        super().work()
