"""The job process: forked once by the supervisor, then runs job after job.

It dequeues, starts, runs and ends jobs itself (see `bookkeeping`), under the soft time
limit RQ gives every job (`JobTimeoutException` raised inside the job by SIGALRM at
`job.timeout`). It writes the job it is running into the shared `JobSlot`, so the
supervisor can kill it at the hard limit or on a stop command and fail that job.

It leaves, and is replaced by a fresh fork, after `max_jobs` jobs or once its peak
memory passes `max_memory_mb`, so a leaking job cannot grow a process for ever. It
dies with its parent (PR_SET_PDEATHSIG), so no job process runs unsupervised.

It sees its worker only through `host.JobProcessHost`: the few things a job process needs.
"""

from __future__ import annotations

import logging
import os
import random
import resource
import signal
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rq.timeouts import JobTimeoutException
from rq.utils import now
from rq.worker import WorkerStatus

from trustcard.connections import REDIS_UNAVAILABLE
from trustcard import rq_seams
from trustcard.metrics.ends import cancel_waiting
from trustcard.status import CANCEL_FIELD
from workers.job_facts import hard_timeout_of, preview, task_log_context
from workers.supervisor.batches import plain_success, start_batch, success_batch
from workers.supervisor.bookkeeping import HAS_DEPENDENTS, SUSPENDED, Bookkeeper, CommandBatch, Dequeued, Sent
from workers.supervisor.process import ExitCode, JobModules, die_with_parent

if TYPE_CHECKING:
    from rq.executions import Execution
    from rq.job import Job
    from rq.queue import Queue

    from workers.supervisor.host import JobProcessHost
    from workers.supervisor.slot import JobSlot

log = logging.getLogger("rq.worker")  # the worker's own log (its handlers: trustcard.logs)

IDLE_WAIT_SECONDS = 1
"""Longest blocking dequeue; a stop request unblocks it at once (`JobSlot.waiting_client`)."""
SUSPENDED_PAUSE_SECONDS = 1.0
REDIS_RETRY_MAX_SECONDS = 5.0
WRITABLE_PROBE_PREFIX = "trustcard:writable:"
"""The key (per worker, gone after a second) whose write tells a waiting job process that
Redis takes writes again."""
TAKEN_SETTLE_SECONDS = 0.2
"""After an outage, how long a job found taken and not started is given before it is put
back: a worker that took it a moment ago starts it within milliseconds."""

_CANCEL_FIELD = CANCEL_FIELD.encode()


@dataclass
class Succeeded:
    """A job that returned; its end is written with the next call to Redis."""

    job: Job
    queue: Queue
    execution: Execution
    return_value: Any
    batch: CommandBatch
    start: Sent
    """The job's start, its answer not read yet: read with the end's (`Bookkeeper.run`)."""


class JobProcess:
    """The loop of one job process; see the module docstring."""

    def __init__(
        self,
        host: JobProcessHost,
        slot: JobSlot,
        *,
        parent_pid: int,
        max_jobs: int,
        max_memory_mb: int,
        burst: bool,
        max_idle_time: int | None,
        job_modules: JobModules | None = None,
    ) -> None:
        self.host = host
        self.slot = slot
        self.parent_pid = parent_pid
        self.max_jobs = max_jobs
        self.max_memory_kb = max_memory_mb * 1024
        self.burst = burst
        self.max_idle_time = max_idle_time
        self.jobs_done = 0
        self.job_modules = job_modules or JobModules(())
        self._modules_marked = self.job_modules.loaded
        self._suspended = False
        self._intermediate_keys = {queue.name: queue.intermediate_queue_key for queue in host.queues}

    def run(self) -> ExitCode:
        """Become the job process, then run jobs until a reason to leave."""
        self._become_job_process()
        return self.loop()

    def loop(self) -> ExitCode:
        """Run jobs until a reason to leave; the exit code says which."""
        host = self.host
        while True:
            try:
                book = self.book = Bookkeeper(host.connection, host.queues, host.job_class, host.serializer)
                break
            except REDIS_UNAVAILABLE as error:
                log.error("job process: Redis unavailable at start (%s)", error)
                self._wait_for_redis()
                reason = self._reason_to_leave()
                if reason is not None:
                    return reason
        idle_since = time.monotonic()
        succeeded: Succeeded | None = None
        while True:
            reason = self._reason_to_leave()
            try:
                # The last job's end and the next job's start from its queue: one call.
                found = book.run(
                    succeeded.batch if succeeded else None,
                    None if reason is not None else host.ordered_queues(),
                    succeeded.job.dependents_key if succeeded else "",
                    succeeded.start if succeeded else None,
                )
            except REDIS_UNAVAILABLE as error:
                unrecorded, succeeded = succeeded, None
                if unrecorded is not None:
                    log.error("task %s: lost Redis while recording its end (%s)", unrecorded.job.id, error)
                    self.slot.end()
                if reason is not None:
                    return reason
                log.error("job process: Redis unavailable (%s)", error)
                self._wait_for_redis()
                if unrecorded is not None:
                    self._recover_after_outage(unrecorded.job, unrecorded.queue)
                    self._discard_if_settled_without_me(unrecorded.job)
                continue
            if found == HAS_DEPENDENTS:
                assert succeeded is not None
                self._end_through_rq(succeeded)
                succeeded = None
                continue  # nothing was taken off the queues: take the next job now
            popped = found.job.id if isinstance(found, Dequeued) else ""
            if succeeded is not None:
                self.slot.end(popped)
                if book.refused is None:
                    _log_success(succeeded.job)
                else:
                    self._discard_late_end(succeeded.job, book.refused)
                succeeded = None
            elif popped:
                self.slot.set_popped(popped)
            if reason is not None:
                return reason
            if found == SUSPENDED:
                if self.burst:
                    log.info("worker %s: suspended in burst mode, exiting", host.name)
                    return ExitCode.SUSPENDED
                self._pause_while_suspended()
                continue
            if self._suspended:
                self._suspended = False
                host.set_state(WorkerStatus.IDLE)
            if found is None and not self.burst:
                found = self._wait_for_job()
                if found is None and self.slot.stop_requested():
                    continue
            if found is None:
                if self.burst:
                    return ExitCode.EMPTY
                if self.max_idle_time is not None and time.monotonic() - idle_since >= self.max_idle_time:
                    return ExitCode.IDLE
                continue
            assert isinstance(found, Dequeued)
            try:
                succeeded = self.run_job(found)
            except REDIS_UNAVAILABLE as error:
                log.error("task %s: lost Redis while running it (%s)", found.job.id, error)
                self.slot.end()
                self._wait_for_redis()
                self._recover_after_outage(found.job, found.queue)
            self.jobs_done += 1
            host.reorder_queues(reference_queue=found.queue)
            idle_since = time.monotonic()

    def _become_job_process(self) -> None:
        """Signals, randomness and parent death, as RQ sets up a work horse."""
        die_with_parent(self.parent_pid)
        random.seed()
        # The supervisor decides when a job must go; a deploy's SIGTERM to the whole
        # process group must not kill the job under it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        self.host.become_job_process()

    def _reason_to_leave(self) -> ExitCode | None:
        if os.getppid() != self.parent_pid:
            return ExitCode.STOPPED
        if self.slot.stop_requested():
            return ExitCode.STOPPED
        if self.jobs_done >= self.max_jobs:
            log.info("job process %d: recycled after %d jobs", os.getpid(), self.jobs_done)
            return ExitCode.RECYCLE
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if self.max_memory_kb and peak_kb >= self.max_memory_kb:
            log.warning(
                "job process %d: recycled after %d jobs, its memory reached %d MB (limit %d MB)",
                os.getpid(), self.jobs_done, peak_kb // 1024, self.max_memory_kb // 1024,
            )
            return ExitCode.RECYCLE
        return None

    def _wait_for_job(self) -> Dequeued | None:
        """Block for the next job. The wait's Redis client id is in the slot before the
        stop flag is read, so a supervisor that sets the flag can end the wait at once."""
        try:
            client = self.book.prepare_wait()
            if self.slot.read().waiting_client != client:
                self.slot.set_waiting_client(client)
            if self.slot.stop_requested():
                return None
            found = self.book.wait(self.host.ordered_queues(), IDLE_WAIT_SECONDS)
        except REDIS_UNAVAILABLE as error:
            log.error("job process: Redis unavailable while waiting for work (%s)", error)
            self._wait_for_redis()
            return None
        if found is not None:
            self.slot.set_popped(found.job.id)
        return found

    # --- one job --------------------------------------------------------------------

    def run_job(self, found: Dequeued) -> Succeeded | None:
        """Start `found`, perform it under the soft limit and record a failure; a plain
        success comes back as a `Succeeded` whose batch goes with the next call to Redis.
        Every line logged meanwhile names the task, its request id and its client."""
        with task_log_context(found.job):
            return self._run_job(found)

    def _run_job(self, found: Dequeued) -> Succeeded | None:
        host = self.host
        job, queue = found.job, found.queue
        remove_from_intermediate = self.book.use_intermediate  # taken into it, whatever the queues
        if host.refuse_unreadable(job, queue):  # not JSON (a pickle, say): failed with the reason
            return self._let_go(job, queue, remove_from_intermediate)
        if _CANCEL_FIELD in found.raw:
            log.info("task %s was cancelled before it started; not running it", job.id)
            cancel_waiting(job)  # counted once, even if the API cancels it at the same moment
            return self._let_go(job, queue, remove_from_intermediate)
        soft_timeout = job.timeout or host.queue_class.DEFAULT_TIMEOUT
        # Its start takes the job out of its origin's intermediate list (the queue it came from).
        intermediate_key = self._intermediate_keys.get(job.origin) if remove_from_intermediate else None
        if remove_from_intermediate and intermediate_key is None:
            intermediate_key = host.queue_class(job.origin, connection=host.connection).intermediate_queue_key
            self._intermediate_keys[job.origin] = intermediate_key
        batch, execution = start_batch(host, job, host.get_heartbeat_ttl(job), intermediate_key)
        self.slot.begin(job.id, execution.id, job.origin, float(soft_timeout), float(hard_timeout_of(job)))
        sent = self.book.send(batch)
        # Said once the start is on its way, not before: Redis writes it meanwhile.
        log.info("task %s received: %s", job.id, (job.meta or {}).get("job_type") or job.func_name)
        host.executions[execution.id] = execution
        try:
            with host.death_penalty_class(soft_timeout, JobTimeoutException, job_id=job.id):
                return_value = job.perform()
            failure = None
        except BaseException:  # noqa: BLE001 - as RQ's perform_job: any escape is the job's failure
            failure = sys.exc_info()
        self._mark_module(job)
        if failure is None:
            try:
                plain = self._plain_success(found, execution, return_value, sent)
            except REDIS_UNAVAILABLE:
                raise
            except BaseException:  # noqa: BLE001 - a failing success path is the job's failure, as in RQ
                plain, failure = None, sys.exc_info()
            if plain is not None:
                return plain  # its start's answer is read with its end's
        self.book.receive(sent)
        try:
            if failure is None:
                if (settled := host.settled_without_me(job)) is not None:
                    host.executions.pop(execution.id, None)
                    self._discard_late_end(job, settled)
                else:
                    host.finish_success(job, queue, execution, return_value)
            elif (settled := host.settled_without_me(job)) is not None:
                host.executions.pop(execution.id, None)
                self._discard_late_end(job, settled)
            else:
                host.finish_failure(job, queue, execution, failure)
                host.set_state(WorkerStatus.IDLE)
        except REDIS_UNAVAILABLE:
            raise
        except BaseException:  # noqa: BLE001 - a failing success path is the job's failure, as in RQ
            host.finish_failure(job, queue, execution, sys.exc_info())
            host.set_state(WorkerStatus.IDLE)
        self.slot.end()
        return None

    def _plain_success(self, found: Dequeued, execution: Execution, return_value: Any, sent: Sent) -> Succeeded | None:
        """A success the lean batch can record (`batches.plain_success`), or None."""
        job, host = found.job, self.host
        ended_at = now()
        result_ttl = job.get_result_ttl(host.default_result_ttl)
        if not plain_success(job, return_value, result_ttl):
            return None
        host.executions.pop(execution.id, None)
        batch = success_batch(host, job, execution, return_value, result_ttl, ended_at)
        return Succeeded(job, found.queue, execution, return_value, batch, sent)

    def _mark_module(self, job: Job) -> None:
        """Tell the supervisor, once, that this job's module is imported now (`JobModules`)."""
        bit = self.job_modules.bit_of(job.func_name or "")
        if bit and not self._modules_marked & bit:
            self._modules_marked |= bit
            self.slot.mark_used(bit)

    def _end_through_rq(self, succeeded: Succeeded) -> None:
        """A success whose job has dependents: RQ's own transaction records it and moves the
        dependents to ready (unless the job was cancelled meanwhile), then enqueues them,
        all before this process takes its next job."""
        job, queue, execution = succeeded.job, succeeded.queue, succeeded.execution
        self.host.executions[execution.id] = execution
        with task_log_context(job):
            try:
                if (settled := self.host.settled_without_me(job)) is not None:
                    self.host.executions.pop(execution.id, None)
                    self._discard_late_end(job, settled)
                    self.slot.end()
                    return
                self.host.finish_success(job, queue, execution, succeeded.return_value)
            except REDIS_UNAVAILABLE as error:
                log.error("task %s: lost Redis while recording its end (%s)", job.id, error)
                self.slot.end()
                self._wait_for_redis()
                self._recover_after_outage(job, queue)
                return
            except BaseException:  # noqa: BLE001 - a failing success path is the job's failure, as in RQ
                self.host.finish_failure(job, queue, execution, sys.exc_info())
            self.host.set_state(WorkerStatus.IDLE)
        self.slot.end()

    def _discard_late_end(self, job: Job, status: str) -> None:
        """The job ended here after it had been settled without us (this worker was cut off
        from Redis past its heartbeat, so it was failed as abandoned, or retried elsewhere):
        its result or its failure is dropped, and the settled end stands."""
        with task_log_context(job):
            log.warning(
                "task %s: ended here after it had been settled as %s while this worker was "
                "unreachable; this end is discarded", job.id, status,
            )
        try:
            self.host.set_state(WorkerStatus.IDLE)
        except REDIS_UNAVAILABLE:
            pass  # the next job's start writes the worker's state again

    def _discard_if_settled_without_me(self, job: Job) -> None:
        """A success whose end could not be sent (Redis unreachable): if the task was settled
        without this worker meanwhile (failed as abandoned, or retried elsewhere), its end is
        dropped and said so, as when the end's script refuses it."""
        try:
            settled = self.host.settled_without_me(job)
        except REDIS_UNAVAILABLE:
            return
        if settled is not None:
            self._discard_late_end(job, settled)

    def _let_go(self, job: Job, queue: Queue, remove_from_intermediate: bool) -> None:
        """A job taken but ended without running: off the intermediate list and the slot."""
        if remove_from_intermediate:
            self.host.connection.lrem(queue.intermediate_queue_key, 1, job.id)
        self.slot.set_popped("")

    # --- waiting ----------------------------------------------------------------------

    def _pause_while_suspended(self) -> None:
        if not self._suspended:
            log.info("worker %s: suspended, run `rq resume` to resume", self.host.name)
            try:
                self.host.set_state(WorkerStatus.SUSPENDED)
            except REDIS_UNAVAILABLE:
                pass
            self._suspended = True
        time.sleep(SUSPENDED_PAUSE_SECONDS)

    def _recover_after_outage(self, job: Job, queue: Queue) -> None:
        """Redis is back but this job's start or end may not be recorded (see the host's
        `recover_after_outage`), so it never stays `started` under a live worker. Retried
        until Redis stays up long enough, or the job process is told to leave."""
        while True:
            try:
                self.host.recover_after_outage(job, queue)
                return
            except REDIS_UNAVAILABLE as error:
                log.error("task %s: Redis went away again while recovering it (%s)", job.id, error)
                self._wait_for_redis()
                if self._reason_to_leave() is not None:
                    return  # the abandoned-task check fails it once this worker is gone

    def _wait_for_redis(self) -> None:
        """Block until Redis takes writes again, backing off; give up when asked to stop.
        The probe is a write, not a PING: Redis at `maxmemory` (or a replica) answers a PING
        and refuses the bookkeeping, and a PING would send the job process straight back."""
        pause = 0.5
        probe = WRITABLE_PROBE_PREFIX + self.host.name
        while self._reason_to_leave() is None:
            try:
                self.host.connection.set(probe, 1, px=1000)
                log.info("job process: Redis takes writes again; carrying on")
                self._recheck_after_outage()
                return
            except REDIS_UNAVAILABLE:
                time.sleep(pause)
                pause = min(pause * 2, REDIS_RETRY_MAX_SECONDS)

    def _recheck_after_outage(self) -> None:
        """What a failover may have undone of this worker's records, put right (the host's
        `recover_after_failover`): a job whose end it undid is failed with the reason instead
        of reading `started` for ever, one whose start it undid is put back on its queue
        instead of staying in the queue's intermediate list. Redis going away again ends the
        pass; the next outage's pass looks again."""
        try:
            taken = self.host.recover_after_failover()
            if taken:
                time.sleep(TAKEN_SETTLE_SECONDS)
                for job, queue in taken:
                    self.host.put_back_if_still_taken(job, queue)
        except REDIS_UNAVAILABLE as error:
            log.error("job process: Redis went away again while looking for undone records (%s)", error)


def _log_success(job: Job) -> None:
    assert job.started_at is not None and job.ended_at is not None
    with task_log_context(job):
        log.info("task %s succeeded in %.3f s: %s", job.id, (job.ended_at - job.started_at).total_seconds(),
                 preview(rq_seams.result_of(job)))
