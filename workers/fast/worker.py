"""`FastWorker`: an `rq worker` whose job process lives for many jobs.

RQ's forking worker pays for a fork, a fresh Redis connection and about twenty Redis
round trips on every job; that, not Redis, limits it to a fraction of Celery's rate.
This worker forks one job process (`horse.JobProcess`) that dequeues and runs jobs
itself with lean bookkeeping, and stays as the supervisor that RQ's parent process is:

- it is the worker RQ knows: it registers, heartbeats, listens on the worker's pubsub
  channel, runs maintenance and the scheduler, and shows in `rq info`, `Worker.all()`
  and rq-dashboard (its job process writes the busy/idle state and current execution);
- it kills the job process at the job's hard limit (`meta["hard_timeout"]`) and fails
  the job with `TimeLimitExceeded: ...`; the soft limit stays RQ's, inside the job;
- `send_stop_job_command` (the API's cancel) kills the job process; the job ends STOPPED;
- a job process that dies (OOM killer, segfault, `os._exit`) fails its job with the
  signal that killed it, within moments; a fresh job process takes over;
- it replaces the job process after `WORKER_MAX_JOBS_PER_CHILD` jobs (default 50, as
  the old Celery service did) or when its peak memory passes `WORKER_MAX_CHILD_MEMORY_MB`;
- on SIGTERM it takes no new job, gives the running one `WORKER_SHUTDOWN_GRACE`
  seconds, then kills it and hands it back to its queue, as `TrustCardWorker` does.

Start it as `rq worker --worker-class workers.fast.FastWorker ...`.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import select
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import FrameType
from typing import TYPE_CHECKING, Any

from rq.command import parse_payload
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.utils import now
from rq.worker import DequeueStrategy, WorkerStatus

from trustcard.catalogue import BY_FUNCTION
from workers.fast.horse import (
    EXIT_CRASHED,
    EXIT_EMPTY,
    EXIT_IDLE,
    EXIT_STOPPED,
    JobProcess,
    job_status_ended,
)
from workers.fast.scheduler import SupervisedScheduler
from workers.fast.slot import JobSlot, SlotView
from workers.worker import REDIS_DOWN, TrustCardWorker, hard_timeout_of

if TYPE_CHECKING:
    from resource import struct_rusage

    from rq.queue import Queue

log = logging.getLogger(__name__)

TICK_SECONDS = 0.5
"""Longest sleep of the supervisor: the precision of the hard limit."""
LOCK_WAIT_SECONDS = 1.0
RESPAWN_PAUSE_MAX_SECONDS = 10.0
LONG_JOB_SECONDS = 2.0
"""A job running this long gets its heartbeats from the supervisor."""

MAX_DEATHS_BEFORE_START = 3
"""Times a job may be taken by a job process that then dies before starting it; then it fails."""
SCHEDULER_CHECK_SECONDS = 2.0
"""How often the supervisor checks that its scheduler process is still alive."""

STOPPED = "stopped"
HARD_LIMIT = "hard limit"
SHUTDOWN = "shutdown"


@dataclass
class Child:
    """The job process as the supervisor knows it."""

    pid: int
    slot: JobSlot
    pidfd: int | None
    started: float = field(default_factory=time.monotonic)


class FastWorker(TrustCardWorker):
    """One supervisor process and one long-lived job process; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_jobs_per_child = self.settings.worker_max_jobs_per_child
        self.max_child_memory_mb = self.settings.worker_max_child_memory_mb
        self._child: Child | None = None
        self._kill_reasons: dict[int, str] = {}
        self._jobs_done = 0
        self._wakeup_read: int | None = None
        self._next_heartbeat = 0.0
        self._respawn_pause = 0.0
        self._next_scheduler_check = 0.0
        self._deaths_before_start: dict[str, int] = {}
        self._handed_back_seq: int | None = None
        self._scheduler_reported: int | None = None

    # --- the supervisor's loop -----------------------------------------------------

    def work(
        self,
        burst: bool = False,
        logging_level: str | None = None,
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
        max_jobs: int | None = None,
        max_idle_time: int | None = None,
        with_scheduler: bool = False,
        dequeue_strategy: DequeueStrategy = DequeueStrategy.DEFAULT,
    ) -> bool:
        """As `Worker.work`, but jobs run in a long-lived job process that this one supervises."""
        self.bootstrap(logging_level, date_format, log_format)
        self._dequeue_strategy = dequeue_strategy
        if with_scheduler:
            self._start_scheduler(burst, logging_level, date_format, log_format)
        self._install_signal_handlers()
        self._install_wakeup_pipe()
        self._preload_job_code()
        self.log.info(
            "worker %s: job processes run up to %d jobs each (memory limit %s)",
            self.name, self.max_jobs_per_child,
            f"{self.max_child_memory_mb} MB" if self.max_child_memory_mb else "none",
        )
        try:
            self.run_maintenance_tasks()
            self._supervise(burst, max_jobs, max_idle_time)
        finally:
            self._end_child()
            self.teardown()
        return self._jobs_done > 0

    def _supervise(self, burst: bool, max_jobs: int | None, max_idle_time: int | None) -> None:
        while True:
            if self._child is None:
                if self._stop_requested or (max_jobs is not None and self._jobs_done >= max_jobs):
                    return
                if self._respawn_pause:
                    self._sleep(self._respawn_pause)
                    if self._stop_requested:
                        return
                quota = self.max_jobs_per_child if max_jobs is None else min(
                    self.max_jobs_per_child, max_jobs - self._jobs_done
                )
                self._spawn_child(quota, burst, max_idle_time)
            assert self._child is not None
            ended = self._wait_for_child(self._next_wake())
            if ended is None:
                self._tick()
                continue
            code = self._child_ended(*ended)
            if code in (EXIT_EMPTY, EXIT_IDLE):
                self.log.info("worker %s: %s, quitting", self.name, "done" if code == EXIT_EMPTY else "idle")
                return

    def _tick(self) -> None:
        """Hard limit, shutdown grace, heartbeats, maintenance."""
        assert self._child is not None
        view = self._child.slot.read()
        moment = time.monotonic()
        if view.running and view.hard_deadline and moment >= view.hard_deadline:
            self.log.warning(
                "task %s: hard time limit of %d s reached, killing its job process",
                view.job_id, round(view.hard_deadline - view.started_mono),
            )
            self._kill_child(HARD_LIMIT, seq=view.seq)
        elif self._stop_requested:
            self._child.slot.request_stop()
            if (
                view.running
                and self._shutdown_deadline is not None
                and moment >= self._shutdown_deadline
                and self._handed_back_seq != view.seq  # once: the kill takes a moment to be reaped
            ):
                self._handed_back_seq = view.seq
                self.log.warning("task %s: shutdown grace over, handing it back to the queue", view.job_id)
                self._kill_child(SHUTDOWN, seq=view.seq)
        if moment >= self._next_heartbeat:
            self._next_heartbeat = moment + self.job_monitoring_interval
            self._heartbeat_for(view, moment)
        if moment >= self._next_scheduler_check:
            self._next_scheduler_check = moment + SCHEDULER_CHECK_SECONDS
            self._revive_scheduler()
        if self.should_run_maintenance_tasks:
            self.run_maintenance_tasks()

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        """As RQ's, but the scheduler process stops when this worker dies, even by SIGKILL."""
        if burst:  # RQ runs the scheduler once in this process: nothing to supervise
            super()._start_scheduler(burst, logging_level, date_format, log_format)
            return
        self.scheduler = SupervisedScheduler(
            self.queues,
            connection=self.connection,
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            self.scheduler.start()

    def _revive_scheduler(self) -> None:
        """RQ's scheduler process exits on any Redis error, and stock RQ starts it again only
        at its next maintenance, up to 10 minutes later: until then no delayed retry runs.
        Start it again within moments (if this worker can take the scheduler's lock)."""
        process = self.scheduler._process if self.scheduler is not None else None
        if process is None or process.is_alive():  # is_alive() also reaps an exited one
            return
        if self._stop_requested:  # a deploy's SIGTERM reached it too: it is meant to be gone
            return
        if process.pid != self._scheduler_reported:
            self._scheduler_reported = process.pid
            self.log.warning("worker %s: scheduler process exited (code %s); starting it again", self.name, process.exitcode)
        try:
            self.scheduler.acquire_locks(auto_start=True)
        except REDIS_DOWN as error:
            self.log.warning("scheduler not restarted yet, Redis unreachable (%s)", error)

    def _next_wake(self) -> float:
        assert self._child is not None
        view = self._child.slot.read()
        moment = time.monotonic()
        wake = min(TICK_SECONDS, max(0.0, self._next_heartbeat - moment))
        if view.running and view.hard_deadline:
            wake = min(wake, max(0.0, view.hard_deadline - moment))
        if self._shutdown_deadline is not None and self._handed_back_seq != view.seq:
            wake = min(wake, max(0.0, self._shutdown_deadline - moment))
        return wake

    def _heartbeat_for(self, view: SlotView, moment: float) -> None:
        """Keep the worker (and a long job's execution) alive in Redis."""
        if not (view.running and moment - view.started_mono >= LONG_JOB_SECONDS):
            self.heartbeat()
            return
        job = self.job_class(view.job_id, connection=self.connection, serializer=self.serializer)
        job.origin = view.origin
        job.timeout = view.soft_timeout
        job.started_at = datetime.fromtimestamp(view.started_wall, tz=timezone.utc)
        execution = Execution(view.execution_id, view.job_id, connection=self.connection, worker_name=self.name)
        self._keep_heartbeats(job, execution)

    # --- the job process --------------------------------------------------------------

    def _spawn_child(self, quota: int, burst: bool, max_idle_time: int | None) -> None:
        slot = JobSlot()
        parent_pid = os.getpid()
        gc.freeze()  # the child's collector then skips everything inherited
        pid = os.fork()
        if pid == 0:
            code = EXIT_CRASHED
            try:
                os.setpgrp()
                self._close_supervisor_fds()
                code = JobProcess(
                    self, slot, parent_pid=parent_pid, max_jobs=quota, max_memory_mb=self.max_child_memory_mb,
                    burst=burst, max_idle_time=max_idle_time,
                ).run()
            except BaseException:  # noqa: BLE001 - the supervisor replaces a crashed job process
                logging.getLogger("rq.worker").exception("job process crashed outside any job")
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        gc.unfreeze()
        try:
            os.setpgid(pid, pid)  # also here: no window in which killpg could miss it
        except OSError:
            pass
        pidfd = None
        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                pidfd = None
        self._child = Child(pid, slot, pidfd)
        self._horse_pid = pid
        self.log.debug("worker %s: job process %d started", self.name, pid)
        try:
            self.connection.hset(self.key, "horse_pid", pid)
        except REDIS_DOWN:
            pass

    def _close_supervisor_fds(self) -> None:
        if self._wakeup_read is not None:
            os.close(self._wakeup_read)
        if self._child is not None and self._child.pidfd is not None:
            os.close(self._child.pidfd)

    def _wait_for_child(self, timeout: float) -> tuple[int, struct_rusage] | None:
        """Wait up to `timeout` s for the job process to end (or a signal to arrive)."""
        assert self._child is not None
        child = self._child
        if child.pidfd is not None:
            poller = select.poll()
            poller.register(child.pidfd, select.POLLIN)
            if self._wakeup_read is not None:
                poller.register(self._wakeup_read, select.POLLIN)
            ready = {fd for fd, _ in poller.poll(timeout * 1000)}
            if self._wakeup_read in ready:
                self._drain_wakeup_pipe()
            if child.pidfd not in ready:
                return None
        else:
            deadline = time.monotonic() + timeout
            while True:
                pid, status, rusage = os.wait4(child.pid, os.WNOHANG)
                if pid:
                    return status, rusage
                if time.monotonic() >= deadline:
                    return None
                time.sleep(min(0.05, timeout))
        _, status, rusage = os.wait4(child.pid, 0)
        return status, rusage

    def _child_ended(self, status: int, rusage: struct_rusage) -> int | None:
        """Settle the job it was running, if any; returns its exit code (None if killed)."""
        assert self._child is not None
        child, self._child = self._child, None
        self._horse_pid = 0
        if child.pidfd is not None:
            os.close(child.pidfd)
        view = child.slot.read()  # the slot stays open: the listener thread may still hold it
        self._jobs_done += view.done
        self.log.debug("worker %s: job process %d ended after %d jobs (%s), %.0f ms CPU in %.1f s", self.name,
                       child.pid, view.done, _describe_status(status), (rusage.ru_utime + rusage.ru_stime) * 1000,
                       time.monotonic() - child.started)
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        if view.running:
            self._settle(view, child.pid, status, rusage)
        elif view.popped:
            self._put_back(view.popped)
        elif code not in (0, EXIT_STOPPED, EXIT_EMPTY, EXIT_IDLE):
            self.log.warning("worker %s: job process %d ended between jobs (%s)", self.name, child.pid,
                             _describe_status(status))
        # A job process that dies young, again and again, must not become a fork loop.
        if view.done == 0 and code not in (EXIT_STOPPED, EXIT_EMPTY, EXIT_IDLE) and not view.running:
            self._respawn_pause = min(max(self._respawn_pause * 2, 0.5), RESPAWN_PAUSE_MAX_SECONDS)
        else:
            self._respawn_pause = 0.0
        return code

    def _settle(self, view: SlotView, pid: int, status: int, rusage: struct_rusage) -> None:
        """The job process died holding a job: record why, unless the job recorded its end."""
        reason = self._kill_reasons.pop(view.seq, None)
        self._kill_reasons.clear()
        try:
            self._record_death(view, reason, pid, status, rusage)
            self.set_state(WorkerStatus.IDLE)
        except REDIS_DOWN as error:
            # Its end cannot be recorded now; the abandoned-task check settles it later.
            self.log.error("task %s: its job process died and Redis is unreachable (%s)", view.job_id, error)

    def _record_death(self, view: SlotView, reason: str | None, pid: int, status: int, rusage: struct_rusage) -> None:
        try:
            job = self.job_class.fetch(view.job_id, connection=self.connection, serializer=self.serializer)
        except NoSuchJobError:
            return
        rq_status = job.get_status(refresh=False)
        if job_status_ended(rq_status):
            return
        queue = self._queue_named(job.origin)
        execution = Execution(view.execution_id, job.id, connection=self.connection, worker_name=self.name)
        execution.created_at = datetime.fromtimestamp(view.started_wall, tz=timezone.utc)
        self.executions[execution.id] = execution
        if rq_status != JobStatus.STARTED and len(self.queues) == 1:
            self.connection.lrem(queue.intermediate_queue_key, 1, job.id)  # died before it started
        job.ended_at = now()
        try:
            if reason == STOPPED:
                self._stopped_job_id = job.id
                self._handle_stopped_job(job, queue, execution)
            elif reason == SHUTDOWN:
                self._hand_back(job, queue, execution)
            else:
                if reason == HARD_LIMIT:
                    exc_string = (
                        f"TimeLimitExceeded: the job ran past its hard time limit of {hard_timeout_of(job)} s "
                        "and its process was killed."
                    )
                else:
                    exc_string = f"Work-horse terminated unexpectedly; waitpid returned {status}{_signal_note(status)}"
                self.handle_work_horse_killed(job, pid, status, rusage)
                self.handle_job_failure(job, queue=queue, exc_string=exc_string, execution=execution)
        finally:
            self.executions.pop(execution.id, None)

    def _put_back(self, job_id: str) -> None:
        """A job the dead process had taken off its queue but not started goes back to its front,
        unless that keeps happening to it: then it is what kills the job process (a poison
        pill), and it is failed with the reason instead of crashing every process that takes it."""
        try:
            job = self.job_class.fetch(job_id, connection=self.connection, serializer=self.serializer)
            if job.get_status(refresh=False) != JobStatus.QUEUED:
                return
            queue = self._queue_named(job.origin)
            deaths = self._deaths_before_start[job_id] = self._deaths_before_start.get(job_id, 0) + 1
            if deaths >= MAX_DEATHS_BEFORE_START:
                del self._deaths_before_start[job_id]
                self.connection.lrem(queue.intermediate_queue_key, 1, job.id)
                reason = (
                    f"JobProcessCrashed: the job process died {deaths} times while taking this job, "
                    "before it could start; it was not run."
                )
                self.log.error("task %s: %s", job.id, reason)
                self.handle_job_failure(job, queue=queue, exc_string=reason)
                return
            if len(self._deaths_before_start) > 1000:  # forget old ones; a poison pill recurs at once
                self._deaths_before_start.clear()
            with self.connection.pipeline() as pipeline:
                pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
                queue.push_job_id(job.id, pipeline=pipeline, at_front=True)
                pipeline.execute()
            self.log.info("task %s: put back on queue %s (its job process died before starting it)", job.id,
                          queue.name)
        except NoSuchJobError:
            return
        except REDIS_DOWN as error:
            self.log.error("task %s: could not be put back, Redis unreachable (%s)", job_id, error)

    def _queue_named(self, name: str) -> Queue:
        for queue in self.queues:
            if queue.name == name:
                return queue
        return self.queue_class(name, connection=self.connection, job_class=self.job_class, serializer=self.serializer)

    def _kill_child(self, reason: str, *, seq: int | None = None, job_id: str | None = None) -> bool:
        """Kill the job process if it still runs the job meant (by `seq` or `job_id`).

        Under the slot's lock: the job process cannot move to its next job in between.
        """
        child = self._child
        if child is None:
            return False
        with child.slot.locked(LOCK_WAIT_SECONDS) as locked:
            view = child.slot.read()
            if locked:
                if (seq is not None and (not view.running or view.seq != seq)) or (
                    job_id is not None and (not view.running or view.job_id != job_id)
                ):
                    return False
            if view.running:
                self._kill_reasons[view.seq] = reason
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError:
                os.kill(child.pid, signal.SIGKILL)
        return True

    def _end_child(self) -> None:
        """On the way out: a job process still there is stopped (its job handed back)."""
        if self._child is None:
            return
        view = self._child.slot.read()
        if view.running:
            self._kill_child(SHUTDOWN, seq=view.seq)
        else:
            self._kill_child(SHUTDOWN)
        _, status, rusage = os.wait4(self._child.pid, 0)
        self._child_ended(status, rusage)

    # --- what RQ asks of a worker --------------------------------------------------------

    def get_current_job_id(self) -> str | None:
        """The job the job process is running (RQ's stop-job command compares with it)."""
        if self._child is not None:
            view = self._child.slot.read()
            return view.job_id if view.running else None
        return super().get_current_job_id()

    def get_current_job(self) -> Job | None:
        job_id = self.get_current_job_id()
        if job_id is None:
            return None
        return self.job_class.fetch(job_id, connection=self.connection, serializer=self.serializer)

    def handle_payload(self, message: dict[str, Any]) -> None:
        """Pubsub commands, in the listener thread: stop-job and kill-horse act on the job process.
        Nothing may escape: an exception here would end the listener thread for good."""
        try:
            self._handle_command(parse_payload(message), message)
        except Exception:  # noqa: BLE001 - see above
            self.log.exception("worker %s: command %r failed", self.name, message)

    def _handle_command(self, payload: dict[str, Any], message: dict[str, Any]) -> None:
        command = payload.get("command")
        if command == "stop-job":
            job_id = payload.get("job_id")
            if job_id and self._kill_child(STOPPED, job_id=job_id):
                self.log.info("task %s: stopped on request", job_id)
            else:
                self.log.warning("worker %s: not running task %s, stop command ignored", self.name, job_id)
        elif command == "stop-execution":
            self.request_stop_execution(payload.get("execution_id", ""))
        elif command == "kill-horse":
            self.kill_horse()
        else:
            super().handle_payload(message)

    def request_stop_execution(self, execution_id: str) -> None:
        """Stop one execution (RQ's stop-execution command), if it is the one running."""
        view = self._child.slot.read() if self._child is not None else None
        if view is not None and view.running and view.execution_id == execution_id:
            self._kill_child(STOPPED, seq=view.seq)
        else:
            self.log.warning("worker %s: not running execution %s, command ignored", self.name, execution_id)

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Kill the job process; a job it was running fails as killed."""
        if self._child is not None:
            self._kill_child("killed")

    def wait_for_horse(self) -> tuple[int | None, int | None, struct_rusage | None]:
        return None, None, None

    def execute_job(self, job: Job, queue: Queue) -> None:
        raise NotImplementedError("FastWorker runs jobs in its job process, not through execute_job")

    # --- stopping -----------------------------------------------------------------------

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """First SIGTERM/SIGINT: no new job; the running one gets `shutdown_grace` seconds."""
        self._shutdown_requested_date = now()
        self._shutdown_deadline = time.monotonic() + self.shutdown_grace
        self._stop_requested = True
        signal.signal(signal.SIGINT, self.request_force_stop)
        signal.signal(signal.SIGTERM, self.request_force_stop)
        self.log.info(
            "worker %s: shutdown requested; a running job gets %d s to finish", self.name, self.shutdown_grace
        )
        # The loop, woken by the signal, tells the job process: no lock is taken in a handler.

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """Second signal: hand the running job back now (the loop does it on waking)."""
        if self._shutdown_requested_date and now() - self._shutdown_requested_date < timedelta(seconds=1):
            return  # the same signal delivered twice (process group and pool)
        self.log.warning("worker %s: cold shutdown", self.name)
        self._shutdown_deadline = time.monotonic()

    def _install_wakeup_pipe(self) -> None:
        """Signals wake the supervisor's poll at once instead of at its next tick."""
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        self._wakeup_read = read_fd

    def _drain_wakeup_pipe(self) -> None:
        assert self._wakeup_read is not None
        try:
            while os.read(self._wakeup_read, 512):
                pass
        except BlockingIOError:
            pass

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop_requested and time.monotonic() < deadline:
            time.sleep(min(0.1, deadline - time.monotonic()))

    def _preload_job_code(self) -> None:
        """Import the catalogued job modules once, here, so every job process starts warm."""
        served = set(self.queue_names())
        for function_path, job_type in BY_FUNCTION.items():
            if job_type.queue not in served:
                continue
            module = function_path.rsplit(".", 1)[0]
            try:
                importlib.import_module(module)
            except Exception:  # noqa: BLE001 - the job fails with the import error when it runs
                self.log.exception("worker %s: could not preload %s", self.name, module)


def _signal_note(status: int) -> str:
    return f" (signal {os.WTERMSIG(status)})" if os.WIFSIGNALED(status) else ""


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"

