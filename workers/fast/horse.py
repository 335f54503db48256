"""The job process: forked once by `FastWorker`, then runs job after job.

It dequeues, starts, runs and finishes jobs itself (see `bookkeeping`), under the soft
time limit RQ gives every job (`JobTimeoutException` raised inside the job by SIGALRM
at `job.timeout`). It writes the job it is running into the shared `JobSlot`, so the
worker process can kill it at the hard limit or on a stop command and fail that job.

It leaves, and is replaced by a fresh fork, after `max_jobs` jobs or once its peak
memory passes `max_memory_mb`, so a leaking job cannot grow a process for ever. It
dies with its parent (PR_SET_PDEATHSIG), so no job process runs unsupervised.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import resource
import signal
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.job import JobStatus
from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.worker import WorkerStatus

from trustcard import logs
from trustcard.metrics.ends import cancel_waiting
from trustcard.status import CANCEL_FIELD
from workers.fast.bookkeeping import (
    SUSPENDED,
    Bookkeeper,
    CommandBatch,
    Dequeued,
    plain_success,
    start_batch,
    success_batch,
)
from workers.worker import _preview, hard_timeout_of

if TYPE_CHECKING:
    from rq.job import Job
    from rq.queue import Queue

    from workers.fast.slot import JobSlot
    from workers.fast.worker import FastWorker

log = logging.getLogger("rq.worker")  # the worker's own log (its handlers: trustcard.logs)

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)
IDLE_WAIT_SECONDS = 1
"""Longest blocking dequeue: how soon an idle job process notices a stop request."""
SUSPENDED_PAUSE_SECONDS = 1.0
REDIS_RETRY_MAX_SECONDS = 5.0

EXIT_RECYCLE = 0
"""Did its share of jobs, or grew too big: replace it."""
EXIT_STOPPED = 64
"""The worker asked it to stop."""
EXIT_EMPTY = 65
"""Burst mode and the queues are empty."""
EXIT_IDLE = 66
"""Idle for the worker's `--max-idle-time`."""
EXIT_CRASHED = 70
"""An error outside any job (the worker logs it and forks a new one)."""

_PR_SET_PDEATHSIG = 1
_CANCEL_FIELD = CANCEL_FIELD.encode()


def die_with_parent(parent_pid: int, signal_number: int = signal.SIGKILL) -> None:
    """Ask Linux to send `signal_number` to this process when its parent dies (however it
    dies); exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal_number, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the loop's getppid() check remains
        log.debug("PR_SET_PDEATHSIG unavailable")
    if os.getppid() != parent_pid:
        os._exit(EXIT_STOPPED)


@dataclass
class Finished:
    """A job that succeeded; its end is written with the next call to Redis."""

    job: Job
    queue: Queue
    batch: CommandBatch


class JobProcess:
    """The loop of one job process. `worker` is this process's copy of its `FastWorker`."""

    def __init__(
        self,
        worker: FastWorker,
        slot: JobSlot,
        *,
        parent_pid: int,
        max_jobs: int,
        max_memory_mb: int,
        burst: bool,
        max_idle_time: int | None,
    ) -> None:
        self.worker = worker
        self.slot = slot
        self.parent_pid = parent_pid
        self.max_jobs = max_jobs
        self.max_memory_kb = max_memory_mb * 1024
        self.burst = burst
        self.max_idle_time = max_idle_time
        self.jobs_done = 0
        self._suspended = False
        self._intermediate_keys = {queue.name: queue.intermediate_queue_key for queue in worker.queues}

    def run(self) -> int:
        """Run jobs until a reason to leave; the exit code says which."""
        self._become_job_process()
        worker = self.worker
        while True:
            try:
                book = self.book = Bookkeeper(worker.connection, worker.queues, worker.job_class, worker.serializer)
                break
            except REDIS_DOWN as error:
                log.error("job process: Redis unreachable at start (%s)", error)
                self._wait_for_redis()
                reason = self._reason_to_leave()
                if reason is not None:
                    return reason
        idle_since = time.monotonic()
        finished: Finished | None = None
        while True:
            reason = self._reason_to_leave()
            try:
                # The last job's end and the next job's start from its queue: one call.
                dependents, found = book.run(
                    finished.batch if finished else None, None if reason is not None else worker._ordered_queues
                )
            except REDIS_DOWN as error:
                unrecorded = finished
                if finished is not None:
                    log.error("task %s: lost Redis while recording its end (%s)", finished.job.id, error)
                    self.slot.end()
                    finished = None
                if reason is not None:
                    return reason
                log.error("job process: Redis unreachable (%s)", error)
                self._wait_for_redis()
                if unrecorded is not None:
                    self._settle_after_outage(unrecorded.job, unrecorded.queue)
                continue
            popped = found.job.id if isinstance(found, Dequeued) else ""
            if finished is not None:
                self.slot.end(popped)
                self._after_success(finished, dependents)
                finished = None
            elif popped:
                self.slot.set_popped(popped)
            if reason is not None:
                return reason
            if found == SUSPENDED:
                self._pause_while_suspended()
                continue
            if self._suspended:
                self._suspended = False
                worker.set_state(WorkerStatus.IDLE)
            if found is None and not self.burst:
                try:
                    found = book.wait(worker._ordered_queues, IDLE_WAIT_SECONDS)
                except REDIS_DOWN as error:
                    log.error("job process: Redis unreachable while waiting for work (%s)", error)
                    self._wait_for_redis()
                    continue
                if found is not None:
                    self.slot.set_popped(found.job.id)
            if found is None:
                if self.burst:
                    return EXIT_EMPTY
                if self.max_idle_time is not None and time.monotonic() - idle_since >= self.max_idle_time:
                    return EXIT_IDLE
                continue
            assert isinstance(found, Dequeued)
            try:
                finished = self.run_job(found)
            except REDIS_DOWN as error:
                log.error("task %s: lost Redis while running it (%s)", found.job.id, error)
                self.slot.end()
                self._wait_for_redis()
                self._settle_after_outage(found.job, found.queue)
            self.jobs_done += 1
            worker.reorder_queues(reference_queue=found.queue)
            idle_since = time.monotonic()

    def _become_job_process(self) -> None:
        """Signals, randomness and parent death, as RQ sets up a work horse."""
        die_with_parent(self.parent_pid)
        random.seed()
        # The worker process decides when a job must go; a deploy's SIGTERM to the whole
        # process group must not kill the job under it (see `TrustCardWorker`).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        self.worker._is_horse = True
        self.worker.procline(f"job process of {self.worker.name}")

    def _reason_to_leave(self) -> int | None:
        if os.getppid() != self.parent_pid:
            return EXIT_STOPPED
        if self.slot.read().stop_requested:
            return EXIT_STOPPED
        if self.jobs_done >= self.max_jobs:
            log.info("job process %d: recycled after %d jobs", os.getpid(), self.jobs_done)
            return EXIT_RECYCLE
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if self.max_memory_kb and peak_kb >= self.max_memory_kb:
            log.warning(
                "job process %d: recycled after %d jobs, its memory reached %d MB (limit %d MB)",
                os.getpid(), self.jobs_done, peak_kb // 1024, self.max_memory_kb // 1024,
            )
            return EXIT_RECYCLE
        return None

    # --- one job --------------------------------------------------------------------

    def run_job(self, found: Dequeued) -> Finished | None:
        """Start `found`, perform it under the soft limit and record a failure; a plain
        success comes back as a `Finished` whose batch goes with the next call to Redis.
        Every line logged meanwhile names the task, its request id and its client."""
        with task_log_context(found.job):
            return self._run_job(found)

    def _run_job(self, found: Dequeued) -> Finished | None:
        worker = self.worker
        job, queue = found.job, found.queue
        remove_from_intermediate = len(worker.queues) == 1
        if not worker._is_readable(job, queue):  # not JSON (a pickle, say): failed with the reason
            return self._let_go(job, queue, remove_from_intermediate)
        if _CANCEL_FIELD in found.raw:
            log.info("task %s was cancelled before it started; not running it", job.id)
            cancel_waiting(job)  # counted once, even if the API cancels it at the same moment
            return self._let_go(job, queue, remove_from_intermediate)
        log.info("task %s received: %s", job.id, (job.meta or {}).get("job_type") or job.func_name)
        soft_timeout = job.timeout or worker.queue_class.DEFAULT_TIMEOUT
        # RQ takes the job out of its origin's intermediate list (the queue it came from).
        intermediate_key = self._intermediate_keys.get(job.origin) if remove_from_intermediate else None
        if remove_from_intermediate and intermediate_key is None:
            intermediate_key = worker.queue_class(job.origin, connection=worker.connection).intermediate_queue_key
            self._intermediate_keys[job.origin] = intermediate_key
        batch, execution = start_batch(worker, job, worker.get_heartbeat_ttl(job), intermediate_key)
        self.slot.begin(job.id, execution.id, job.origin, float(soft_timeout), float(hard_timeout_of(job)))
        sent = self.book.send(batch)
        worker.executions[execution.id] = execution
        try:
            with worker.death_penalty_class(soft_timeout, JobTimeoutException, job_id=job.id):
                return_value = job.perform()
            failure = None
        except BaseException:  # noqa: BLE001 - as RQ's perform_job: any escape is the job's failure
            failure = sys.exc_info()
        self.book.receive(sent)
        try:
            if failure is None:
                ended_at = now()
                result_ttl = job.get_result_ttl(worker.default_result_ttl)
                if plain_success(job, return_value, result_ttl):
                    worker.executions.pop(execution.id, None)
                    batch = success_batch(worker, job, execution, return_value, result_ttl, ended_at)
                    return Finished(job, queue, batch)
                worker._finalize_success(job, queue, execution, return_value)
            else:
                worker._finalize_failure(job, queue, execution, failure)
                worker.set_state(WorkerStatus.IDLE)
        except REDIS_DOWN:
            raise
        except BaseException:  # noqa: BLE001 - a failing success path is the job's failure, as in RQ
            worker._finalize_failure(job, queue, execution, sys.exc_info())
            worker.set_state(WorkerStatus.IDLE)
        self.slot.end()
        return None

    def _let_go(self, job: Job, queue: Queue, remove_from_intermediate: bool) -> None:
        """A job taken but ended without running: off the intermediate list and the slot."""
        if remove_from_intermediate:
            self.worker.connection.lrem(queue.intermediate_queue_key, 1, job.id)
        self.slot.set_popped("")

    def _after_success(self, finished: Finished, dependents: object) -> None:
        job = finished.job
        if dependents:
            finished.queue.enqueue_dependents(job)
        assert job.started_at is not None and job.ended_at is not None
        with task_log_context(job):
            log.info(
                "task %s succeeded in %.3f s: %s",
                job.id, (job.ended_at - job.started_at).total_seconds(), _preview(job._result),
            )

    # --- waiting ----------------------------------------------------------------------

    def _pause_while_suspended(self) -> None:
        if not self._suspended:
            log.info("worker %s: suspended, run `rq resume` to resume", self.worker.name)
            try:
                self.worker.set_state(WorkerStatus.SUSPENDED)
            except REDIS_DOWN:
                pass
            self._suspended = True
        time.sleep(SUSPENDED_PAUSE_SECONDS)

    def _settle_after_outage(self, job: Job, queue: Queue) -> None:
        """Redis is back but this job's start or end may not be recorded: put it back on its
        queue if it never started, fail it with the reason if it still reads `started`
        (its retry policy may requeue it), so it never stays `started` under a live worker.
        Retried until Redis stays up long enough, or the job process is told to leave."""
        while True:
            try:
                self.worker._settle_after_outage(job, queue)
                return
            except REDIS_DOWN as error:
                log.error("task %s: Redis went away again while settling it (%s)", job.id, error)
                self._wait_for_redis()
                if self._reason_to_leave() is not None:
                    return  # the abandoned-task check settles it once this worker is gone

    def _wait_for_redis(self) -> None:
        """Block until Redis answers, backing off; give up when asked to stop."""
        pause = 0.5
        while self._reason_to_leave() is None:
            try:
                self.worker.connection.ping()
                log.info("job process: Redis answers again; carrying on")
                return
            except REDIS_DOWN:
                time.sleep(pause)
                pause = min(pause * 2, REDIS_RETRY_MAX_SECONDS)


def task_log_context(job: Job) -> AbstractContextManager[None]:
    """The log context of `job`: its id, and the request id and client the web kept in its meta."""
    try:
        meta = job.meta or {}
    except Exception:  # noqa: BLE001 - an unreadable job is still logged, by id
        meta = {}
    return logs.bound(task_id=job.id, request_id=meta.get("request_id"), client=meta.get("submitted_by"))


def job_status_ended(status: JobStatus | None) -> bool:
    """A status after which nothing may overwrite the job's end."""
    return status in (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)
