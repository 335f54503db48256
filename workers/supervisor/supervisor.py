"""`JobProcessSupervisor`: an `rq worker` whose jobs run in a long-lived job process.

RQ's forking worker pays for a fork, a fresh Redis connection and about twenty Redis
round trips on every job; that, not Redis, limits it to a fraction of Celery's rate.
This worker forks one job process (`job_process.JobProcess`) that dequeues and runs jobs
itself with lean bookkeeping, and stays as the supervisor that RQ's parent process is:

- it is the worker RQ knows: it registers, heartbeats, listens on the worker's pubsub
  channel (`commands`), runs maintenance and, in its own loop, the scheduler (`scheduler`), and shows in
  `rq info`, `Worker.all()` and rq-dashboard (its job process writes the busy/idle state);
- it kills the job process at the job's hard limit (`meta["hard_timeout"]`) and fails
  the job with `TimeLimitExceeded: ...`; the soft limit stays RQ's, inside the job;
- `send_stop_job_command` (the API's cancel) kills the job process; the job ends STOPPED;
- a job process that dies (OOM killer, segfault, `os._exit`) fails its job with the
  signal that killed it, within moments (`deaths`); a fresh job process takes over;
- the tasks of a worker that vanished (killed, or its host cut off) are failed as abandoned,
  or retried, about a minute after its last heartbeat (`abandoned`), read or not;
- it replaces the job process after `WORKER_MAX_JOBS_PER_CHILD` jobs (default 1,000) or
  when its peak memory passes `WORKER_MAX_CHILD_MEMORY_MB` (the leak guard that matters);
- on SIGTERM it takes no new job, gives the running one `WORKER_SHUTDOWN_GRACE` seconds,
  then kills it and hands it back to its queue (a second SIGTERM does that at once).

Start it as `rq worker --worker-class workers.supervisor.JobProcessSupervisor ...`.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.executions import Execution
from rq.worker import DequeueStrategy, WorkerStatus

from trustcard import rq_seams
from trustcard.failures import KillReason
from workers.supervisor import process
from workers.supervisor.abandoned import CHECK_SECONDS as ABANDONED_CHECK_SECONDS
from workers.supervisor.abandoned import settle_abandoned
from workers.supervisor.commands import CommandsMixin
from workers.supervisor.deaths import PoisonPillGuard, record_death
from workers.supervisor.job_process import JobProcess
from workers.supervisor.process import ExitCode, RunningJobProcess
from workers.supervisor.recording import REDIS_UNAVAILABLE
from workers.supervisor.scheduler import InProcessScheduler, start_scheduler
from workers.supervisor.slot import JobSlot, SlotView
from workers.supervisor.soft_limit import SoftTimeLimit

if TYPE_CHECKING:
    from resource import struct_rusage

    from rq.job import Job
    from rq.queue import Queue

    from trustcard.rq_seams import ExcInfo

TICK_SECONDS = 0.5
"""Longest sleep of the supervisor: the precision of the hard limit."""
RESPAWN_PAUSE_MAX_SECONDS = 10.0
LONG_JOB_SECONDS = 2.0
"""A job running this long gets its heartbeats from the supervisor."""


class JobProcessSupervisor(CommandsMixin):
    """One supervisor process and one long-lived job process; see the module docstring."""

    death_penalty_class = SoftTimeLimit

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_jobs_per_child = self.settings.worker_max_jobs_per_child
        self.max_child_memory_mb = self.settings.worker_max_child_memory_mb
        self.job_process: RunningJobProcess | None = None
        self.kill_reasons: dict[int, KillReason] = {}
        self._jobs_done = 0
        self._wakeup_read: int | None = None
        self._next_heartbeat = 0.0
        self._respawn_pause = 0.0
        self._next_abandoned_check = 0.0
        self._taken_seen: dict[str, float] = {}
        """Jobs seen taken and not started, when first seen (`abandoned.put_back_taken`)."""
        self._shutdown_deadline: float | None = None
        self._shutdown_date_written = False
        self._handed_back_seq: int | None = None
        self._poison_pills = PoisonPillGuard(self)
        self._current_job: Job | None = None
        self._job_modules = process.JobModules(())

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
        """As `Worker.work`, but jobs run in a long-lived job process that this one supervises.
        Returns whether this call ran any job; `max_jobs` counts this call's jobs only."""
        self._jobs_done = 0
        self.bootstrap(logging_level, date_format, log_format)
        self.set_state(WorkerStatus.IDLE)  # registered, and waiting for work, as RQ shows it
        rq_seams.set_dequeue_strategy(self, dequeue_strategy)
        if with_scheduler:
            self._start_scheduler(burst, logging_level, date_format, log_format)
        rq_seams.install_signal_handlers(self)
        self._wakeup_read = process.install_wakeup_pipe()
        self._job_modules = process.JobModules(self.queue_names())
        self.log.info(
            "worker %s: job processes run up to %d jobs each (memory limit %s)",
            self.name, self.max_jobs_per_child,
            f"{self.max_child_memory_mb} MB" if self.max_child_memory_mb else "none",
        )
        try:
            self.run_maintenance_tasks()
            self._supervise(burst, max_jobs, max_idle_time)
        finally:
            self._end_job_process()
            self.teardown()
        return self._jobs_done > 0

    def _supervise(self, burst: bool, max_jobs: int | None, max_idle_time: int | None) -> None:
        while True:
            if self.job_process is None:
                if rq_seams.stop_requested(self) or (max_jobs is not None and self._jobs_done >= max_jobs):
                    return
                if self._respawn_pause:
                    self._sleep(self._respawn_pause)
                    if rq_seams.stop_requested(self):
                        return
                quota = self.max_jobs_per_child if max_jobs is None else min(
                    self.max_jobs_per_child, max_jobs - self._jobs_done
                )
                self._spawn_job_process(quota, burst, max_idle_time)
            assert self.job_process is not None
            running = self.job_process
            ended = process.wait_for_exit(running.pid, running.pidfd, self._wakeup_read, self._next_wake())
            if ended is None:
                self._tick()
                continue
            code = self._job_process_ended(*ended)
            if code is not None and code.ends_the_worker:
                why = {ExitCode.EMPTY: "done", ExitCode.IDLE: "idle", ExitCode.SUSPENDED: "suspended"}[code]
                self.log.info("worker %s: %s, quitting", self.name, why)
                return

    def _tick(self) -> None:
        """Hard limit, shutdown grace, heartbeats, abandoned tasks, maintenance."""
        assert self.job_process is not None
        slot = self.job_process.slot
        view = slot.read()
        moment = time.monotonic()
        if view.running and view.hard_deadline and moment >= view.hard_deadline:
            self.log.warning(
                "task %s: hard time limit of %d s reached, killing its job process",
                view.job_id, round(view.hard_deadline - view.started_mono),
            )
            self.kill_job_process(KillReason.HARD_LIMIT, seq=view.seq)
        elif rq_seams.stop_requested(self):
            self._obey_stop(slot, view, moment)
        if moment >= self._next_heartbeat:
            self._next_heartbeat = moment + self.job_monitoring_interval
            self._heartbeat_for(view, moment)
        if isinstance(self.scheduler, InProcessScheduler) and not rq_seams.stop_requested(self):
            self.scheduler.tick(moment)
        if moment >= self._next_abandoned_check:
            self._next_abandoned_check = moment + ABANDONED_CHECK_SECONDS
            self._settle_abandoned()
        if self.should_run_maintenance_tasks:
            self.run_maintenance_tasks()

    def _settle_abandoned(self) -> None:
        """Tasks of vanished workers on our queues: failed or retried now, not in 10 minutes;
        jobs taken and never started put back. (Analyses whose next stage was never queued are
        the web's to queue: trustcard/api/stranded_watch.py.)"""
        try:
            settle_abandoned(self, self._taken_seen)
        except (*REDIS_UNAVAILABLE, RedisError) as error:  # down, out of memory, read-only: next round
            self.log.warning("abandoned-task check skipped, Redis failed (%s)", error)

    def _obey_stop(self, slot: JobSlot, view: SlotView, moment: float) -> None:
        """No new job; an idle job process's wait ends now; a running job gets its grace."""
        slot.request_stop()
        if not self._shutdown_date_written:
            self._shutdown_date_written = True
            try:
                self.set_shutdown_requested_date()
            except REDIS_UNAVAILABLE as error:
                self.log.warning("shutdown date not recorded, Redis unreachable (%s)", error)
        if not view.running and view.waiting_client:
            try:
                self.connection.client_unblock(view.waiting_client)
            except REDIS_UNAVAILABLE:
                pass  # its wait ends by its own timeout
        if (
            view.running
            and self._shutdown_deadline is not None
            and moment >= self._shutdown_deadline
            and self._handed_back_seq != view.seq  # once: the kill takes a moment to be reaped
        ):
            self._handed_back_seq = view.seq
            self.log.warning("task %s: shutdown grace over, handing it back to the queue", view.job_id)
            self.kill_job_process(KillReason.SHUTDOWN, seq=view.seq)

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        """As RQ's, but the scheduler runs in this process's loop (`_tick`): no process of its own."""
        start_scheduler(self, burst, logging_level, date_format, log_format)

    def stop_scheduler(self) -> None:
        """RQ's stops a scheduler process; this one releases the in-process scheduler's locks."""
        if isinstance(self.scheduler, InProcessScheduler):
            self.scheduler.stop()
        else:
            super().stop_scheduler()

    def _next_wake(self) -> float:
        assert self.job_process is not None
        view = self.job_process.slot.read()
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
        self.keep_heartbeats(job, execution)

    # --- the job process's life ----------------------------------------------------------

    def _spawn_job_process(self, quota: int, burst: bool, max_idle_time: int | None) -> None:
        slot = JobSlot()
        parent_pid = os.getpid()
        gc.freeze()  # the job process's collector then skips everything inherited
        pid = os.fork()
        if pid == 0:
            code = ExitCode.CRASHED
            try:
                os.setpgrp()
                self._close_supervisor_fds()
                code = JobProcess(
                    self, slot, parent_pid=parent_pid, max_jobs=quota, max_memory_mb=self.max_child_memory_mb,
                    burst=burst, max_idle_time=max_idle_time, job_modules=self._job_modules,
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
        self.job_process = RunningJobProcess(pid, slot, process.open_pidfd(pid))
        rq_seams.set_job_process_pid(self, pid)
        self.log.debug("worker %s: job process %d started", self.name, pid)
        try:
            self.connection.hset(self.key, "horse_pid", pid)
        except REDIS_UNAVAILABLE:
            pass

    def _close_supervisor_fds(self) -> None:
        if self._wakeup_read is not None:
            os.close(self._wakeup_read)
        if self.job_process is not None and self.job_process.pidfd is not None:
            os.close(self.job_process.pidfd)

    def _job_process_ended(self, status: int, rusage: struct_rusage) -> ExitCode | None:
        """Record the end of the job it was running, if any; returns its exit code (None if killed)."""
        assert self.job_process is not None
        ended, self.job_process = self.job_process, None
        rq_seams.set_job_process_pid(self, 0)
        self._current_job = None
        if ended.pidfd is not None:
            os.close(ended.pidfd)
        view = ended.slot.read()  # the slot stays open: the listener thread may still hold it
        self._job_modules.preload(ended.slot.used(), self.name)  # the next job process starts warm
        self._jobs_done += view.done
        self.log.debug("worker %s: job process %d ended after %d jobs (%s), %.0f ms CPU in %.1f s", self.name,
                       ended.pid, view.done, process.describe_wait_status(status),
                       (rusage.ru_utime + rusage.ru_stime) * 1000, time.monotonic() - ended.started)
        code = process.exit_code_of(status)
        orderly = code is not None and code.is_orderly
        if view.running:
            self._record_death(view, ended.pid, status, rusage)
        elif view.popped:
            self._poison_pills.put_back(view.popped)
        elif not orderly:
            self.log.warning("worker %s: job process %d ended between jobs (%s)", self.name, ended.pid,
                             process.describe_wait_status(status))
        # A job process that dies young, again and again, must not become a fork loop.
        if view.done == 0 and not view.running and code not in (ExitCode.STOPPED, *_WORKER_ENDS):
            self._respawn_pause = min(max(self._respawn_pause * 2, 0.5), RESPAWN_PAUSE_MAX_SECONDS)
        else:
            self._respawn_pause = 0.0
        return code

    def _record_death(self, view: SlotView, pid: int, status: int, rusage: struct_rusage) -> None:
        """The job process died holding a job: record why, unless the job recorded its end."""
        reason = self.kill_reasons.pop(view.seq, None)
        self.kill_reasons.clear()
        try:
            record_death(self, view, reason, pid, status, rusage)
            self.set_state(WorkerStatus.IDLE)
        except REDIS_UNAVAILABLE as error:
            # Its end cannot be recorded now; the abandoned-task check fails it later.
            self.log.error("task %s: its job process died and Redis is unreachable (%s)", view.job_id, error)

    def _end_job_process(self) -> None:
        """On the way out: a job process still there is stopped (its job handed back)."""
        if self.job_process is None:
            return
        view = self.job_process.slot.read()
        self.kill_job_process(KillReason.SHUTDOWN, seq=view.seq if view.running else None)
        _, status, rusage = os.wait4(self.job_process.pid, 0)
        self._job_process_ended(status, rusage)

    # --- what the job process asks of its worker (`JobProcessHost`) ----------------------

    def become_job_process(self) -> None:
        rq_seams.mark_job_process(self)
        self.procline(f"job process of {self.name}")

    def ordered_queues(self) -> list[Queue]:
        return rq_seams.ordered_queues(self)

    def finish_success(self, job: Job, queue: Queue, execution: Execution, return_value: Any) -> None:
        rq_seams.finalize_success(self, job, queue, execution, return_value)

    def finish_failure(self, job: Job, queue: Queue, execution: Execution, exc_info: ExcInfo) -> None:
        rq_seams.finalize_failure(self, job, queue, execution, exc_info)

    # --- waiting ------------------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not rq_seams.stop_requested(self) and time.monotonic() < deadline:
            time.sleep(min(0.1, deadline - time.monotonic()))


_WORKER_ENDS = (ExitCode.EMPTY, ExitCode.IDLE, ExitCode.SUSPENDED)
