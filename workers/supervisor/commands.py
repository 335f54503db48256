"""RQ's pubsub commands and the stop signals, as the supervisor obeys them, and the kill.

RQ's commands (`send_stop_job_command`, `send_kill_horse_command`, stop-execution,
shutdown) arrive in the pubsub listener thread; SIGTERM and SIGINT ask for a warm
shutdown (a second one hands the running job back at once). Stop-job and kill-horse act on the job
process; the rest is RQ's own handling. The kill happens under the slot's lock, so the
job process cannot move on to its next job in between: the job meant is the job killed.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

from rq.command import parse_payload
from rq.utils import now

from trustcard import rq_seams
from trustcard.failures import KillReason
from workers.supervisor.recording import RecordingWorker

if TYPE_CHECKING:
    from rq.job import Job

    from workers.supervisor.process import RunningJobProcess

LOCK_WAIT_SECONDS = 1.0


class CommandsMixin(RecordingWorker):
    """Commands and kills; the supervisor keeps `job_process` and `kill_reasons` up to date."""

    job_process: RunningJobProcess | None
    kill_reasons: dict[int, KillReason]
    _shutdown_deadline: float | None
    _current_job: Job | None

    def kill_job_process(self, reason: KillReason, *, seq: int | None = None, job_id: str | None = None) -> bool:
        """Kill the job process if it still runs the job meant (by `seq` or `job_id`; any
        job, or none, when neither is given). The reason decides how the job ends."""
        running = self.job_process
        if running is None:
            return False
        with running.slot.locked(LOCK_WAIT_SECONDS) as locked:
            view = running.slot.read()
            if locked:
                if (seq is not None and (not view.running or view.seq != seq)) or (
                    job_id is not None and (not view.running or view.job_id != job_id)
                ):
                    return False
            if view.running:
                self.kill_reasons[view.seq] = reason
            try:
                os.killpg(running.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError:
                os.kill(running.pid, signal.SIGKILL)
        return True

    def handle_payload(self, message: dict[str, Any]) -> None:
        """Pubsub commands, in the listener thread. Nothing may escape: an exception here
        would end the listener thread for good."""
        try:
            self._obey(parse_payload(message), message)
        except Exception:  # noqa: BLE001 - see above
            self.log.exception("worker %s: command %r failed", self.name, message)

    def _obey(self, payload: dict[str, Any], message: dict[str, Any]) -> None:
        command = payload.get("command")
        if command == "stop-job":
            job_id = payload.get("job_id")
            if job_id and self.kill_job_process(KillReason.STOPPED, job_id=job_id):
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
        view = self.job_process.slot.read() if self.job_process is not None else None
        if view is not None and view.running and view.execution_id == execution_id:
            self.kill_job_process(KillReason.STOPPED, seq=view.seq)
        else:
            self.log.warning("worker %s: not running execution %s, command ignored", self.name, execution_id)

    def kill_horse(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """RQ's kill-horse: kill the job process; a job it was running fails as killed."""
        self.kill_job_process(KillReason.KILLED)

    # --- what RQ asks of a worker --------------------------------------------------------

    def get_current_job_id(self) -> str | None:
        """The job the job process is running (RQ's stop-job command compares with it)."""
        if self.job_process is not None:
            view = self.job_process.slot.read()
            return view.job_id if view.running else None
        return super().get_current_job_id()

    def get_current_job(self) -> Job | None:
        """The running job, fetched once per job (RQ's own answer when no job process runs)."""
        if self.job_process is None:
            return super().get_current_job()
        job_id = self.get_current_job_id()
        if job_id is None:
            return None
        if self._current_job is None or self._current_job.id != job_id:
            self._current_job = self.job_class.fetch(job_id, connection=self.connection, serializer=self.serializer)
        return self._current_job

    # --- stop signals -------------------------------------------------------------------

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """First SIGTERM/SIGINT: no new job; the running one gets `shutdown_grace` seconds.
        The loop, woken by the signal, tells the job process: no lock is taken in a handler."""
        rq_seams.set_shutdown_requested_date(self, now())
        self._shutdown_deadline = time.monotonic() + self.shutdown_grace
        rq_seams.set_stop_requested(self)
        signal.signal(signal.SIGINT, self.request_force_stop)
        signal.signal(signal.SIGTERM, self.request_force_stop)
        self.log.info(
            "worker %s: shutdown requested; a running job gets %d s to finish", self.name, self.shutdown_grace
        )

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """Second signal: hand the running job back now (the loop does it on waking)."""
        requested = rq_seams.shutdown_requested_date(self)
        if requested and now() - requested < timedelta(seconds=1):
            return  # the same signal delivered twice (process group and pool)
        self.log.warning("worker %s: cold shutdown", self.name)
        self._shutdown_deadline = time.monotonic()
