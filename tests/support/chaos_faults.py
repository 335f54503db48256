"""The chaos soak's faults: SIGKILLs of the Procfile stack's processes and restarts of its Redis.

Each fault is one kind (`FAULT_KINDS`); `FaultInjector.inject` finds a target of that kind in
the running stack, kills it, and restarts whatever nothing else restarts (a gunicorn master
forks a new worker for a killed one, a supervisor a new job process; a killed master or
supervisor is a dead line, which this restarts as a platform would). RQ's scheduler runs
inside a supervisor's loop (`workers/supervisor/scheduler.py`), so "the scheduler" is the
supervisor that holds a scheduler lock, found through the lock in Redis.
"""

from __future__ import annotations

import logging
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from tests.support.processes import ProcessGroup, children_of, running, send_signal
from tests.support.procfile import procfile_command
from tests.support.procfile_stack import ProcfileStack

log = logging.getLogger(__name__)

WEB_WORKER = "SIGKILL gunicorn worker"
WEB_MASTER = "SIGKILL gunicorn master (web restarted)"
SUPERVISOR = "SIGKILL worker supervisor (worker restarted)"
JOB_PROCESS = "SIGKILL job process"
SCHEDULER = "SIGKILL scheduler-lock holder (worker restarted)"
REDIS_RESTART = "Redis restart (SIGTERM, AOF fsynced)"
REDIS_KILL = "Redis SIGKILL (AOF everysec, opt-in)"

FAULT_KINDS = (WEB_WORKER, WEB_MASTER, SUPERVISOR, JOB_PROCESS, SCHEDULER, REDIS_RESTART)
"""The default mix. `REDIS_KILL` is opt-in: with `appendfsync everysec` Redis may lose the last
second of acknowledged writes when it is SIGKILLed, its documented limit, not ours."""
ALL_KINDS = (*FAULT_KINDS, REDIS_KILL)
SCHEDULER_QUEUE = "analysis"
"""A queue whose scheduler lock names the scheduler (every worker serves every queue)."""


@dataclass
class FaultInjector:
    """Injects faults into `stack`, counting them and keeping a timeline (`say`)."""

    stack: ProcfileStack
    rng: random.Random
    say: Callable[[str], None]
    kinds: tuple[str, ...] = FAULT_KINDS
    injected: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    redis_kills: list[float] = field(default_factory=list)
    """time.time() of each Redis SIGKILL: what the checker may blame a loss on."""
    _round: list[str] = field(default_factory=list)

    def next_kind(self) -> str:
        """The kinds in random order, each once per round: random, and every kind comes up."""
        if not self._round:
            self._round = list(self.kinds)
            self.rng.shuffle(self._round)
        return self._round.pop()

    def inject(self, kind: str) -> bool:
        """One fault of `kind`; False (counted as skipped) when it had no target just then."""
        action = {
            WEB_WORKER: self._kill_web_worker,
            WEB_MASTER: self._kill_web_master,
            SUPERVISOR: self._kill_a_supervisor,
            JOB_PROCESS: self._kill_job_process,
            SCHEDULER: self._kill_scheduler,
            REDIS_RESTART: lambda: self._restart_redis(graceful=True),
            REDIS_KILL: lambda: self._restart_redis(graceful=False),
        }[kind]
        try:
            done = action()
        except (OSError, redis.RedisError) as error:
            self.say(f"fault {kind}: not injected ({error})")
            done = False
        (self.injected if done else self.skipped)[kind] += 1
        return done

    def ensure_running(self) -> None:
        """Restart any line that is down (before the drain: every part must be there to finish)."""
        if self.stack.web is None or self.stack.web.poll() is not None:
            self._restart_web()
        for index, worker in enumerate(self.stack.workers):
            if worker.poll() is not None:
                self._restart_worker(index)
        if self.stack.redis.process is None or self.stack.redis.process.poll() is not None:
            self.stack.redis.start()

    # --- the web ---------------------------------------------------------------------------

    def _kill_web_worker(self) -> bool:
        web = self.stack.web
        workers = sorted(pid for pid in children_of(web.pid) if running(pid)) if web else []
        if not workers:
            return False
        pid = self.rng.choice(workers)
        send_signal(pid, signal.SIGKILL)
        self.say(f"fault: SIGKILL gunicorn worker {pid} (master {web.pid} forks a new one)")
        return True

    def _kill_web_master(self) -> bool:
        web = self.stack.web
        if web is None or web.poll() is not None:
            return False
        send_signal(web.pid, signal.SIGKILL)
        web.kill()  # its workers notice the master is gone only at their next check: the dyno crashed
        self.say(f"fault: SIGKILL gunicorn master {web.pid} and its workers; web restarted")
        self._restart_web()
        return True

    def _restart_web(self) -> None:
        self.stack.web = ProcessGroup.start("web", procfile_command("web"), self.stack.env, self.stack.log_path)
        self.say(f"web started again: master {self.stack.web.pid}")

    # --- the workers -----------------------------------------------------------------------

    def _live_workers(self) -> list[int]:
        return [index for index, worker in enumerate(self.stack.workers) if worker.poll() is None]

    def _kill_a_supervisor(self) -> bool:
        """One that does not hold the scheduler lock when there is one: that is its own kind."""
        live = self._live_workers()
        if not live:
            return False
        holder = self._scheduler_pid()
        others = [index for index in live if self.stack.workers[index].pid != holder]
        self._kill_worker(self.rng.choice(others or live), "worker supervisor")
        return True

    def _kill_job_process(self) -> bool:
        targets = [(index, pid) for index in self._live_workers()
                   for pid in children_of(self.stack.workers[index].pid) if running(pid)]
        if not targets:
            return False
        index, pid = self.rng.choice(targets)
        send_signal(pid, signal.SIGKILL)
        self.say(f"fault: SIGKILL job process {pid} of supervisor {self.stack.workers[index].pid}")
        return True

    def _kill_scheduler(self) -> bool:
        holder = self._scheduler_pid()
        for index in self._live_workers():
            if self.stack.workers[index].pid == holder:
                self._kill_worker(index, "supervisor holding the scheduler lock")
                return True
        self.say(f"fault {SCHEDULER}: no live supervisor holds the lock (held by pid {holder}; "
                 "a killed holder's lock lasts its TTL)")
        return False

    def _scheduler_pid(self) -> int | None:
        """The pid of the supervisor whose in-process scheduler holds the lock, if any does."""
        client = self.stack.redis.local_client(socket_timeout=2, socket_connect_timeout=2)
        try:
            name = client.get(f"rq:scheduler-lock:{SCHEDULER_QUEUE}")
            pid = client.hget(f"rq:scheduler:{name.decode()}", "pid") if name else None
            return int(pid) if pid else None
        finally:
            client.close()

    def _kill_worker(self, index: int, what: str) -> None:
        worker = self.stack.workers[index]
        send_signal(worker.pid, signal.SIGKILL)  # its job process dies with it (PDEATHSIG)
        worker.kill()
        self.say(f"fault: SIGKILL {what} {worker.pid}; worker restarted")
        self._restart_worker(index)

    def _restart_worker(self, index: int) -> None:
        self.stack.workers[index] = ProcessGroup.start(
            f"worker-{index}", procfile_command("worker"), self.stack.env, self.stack.log_path
        )
        self.say(f"worker-{index} started again: supervisor {self.stack.workers[index].pid}")

    # --- Redis -----------------------------------------------------------------------------

    def _restart_redis(self, graceful: bool) -> bool:
        server = self.stack.redis
        if server.process is None or server.process.poll() is not None:
            return False
        started = time.monotonic()
        if graceful:
            server.process.terminate()  # SIGTERM: Redis fsyncs the append-only file, then exits
        else:
            self.redis_kills.append(time.time())
            server.process.kill()
        server.process.wait(30)
        server.start()
        self.say(f"fault: Redis {'SIGTERM' if graceful else 'SIGKILL'}, up again after "
                 f"{time.monotonic() - started:.2f} s")
        return True
