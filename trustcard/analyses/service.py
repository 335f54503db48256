"""The analysis service: submit, read, list, cancel, retry; rows in, plain data out.

The row in the database is the record (it outlives RQ's result lifetime and a Redis
flush); RQ holds only the job of the stage that runs next. Only `trustcard.api` calls this.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from redis import Redis
from rq.job import Job
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from trustcard.analyses import listing, records
from trustcard.analyses.callback import deliver_if_ended
from trustcard.analyses.events import announce
from trustcard.analyses.following import fail_unrecorded_stage
from trustcard.analyses.stage_jobs import claim, enqueue_stage, new_job_id
from trustcard.analyses.stranded import queue_if_stranded
from trustcard.analyses.stages import find, stages
from trustcard.analyses.urls import PostURLRefused, parse_post_url
from trustcard.analyses.view import analysis_view
from trustcard.catalogue import JobType
from trustcard.config import Settings
from trustcard.exceptions import (
    AnalysisAlreadyEnded,
    AnalysisNotFound,
    AnalysisNotRetryable,
    DatabaseUnavailable,
    QueueNotReplicated,
    QueueUnavailable,
    TaskAlreadyEnded,
    TaskNotFound,
    ValidationFailed,
)
from trustcard.models import Analysis
from trustcard.task_service import TaskService, redis_required
from trustcard.task_submission import IdempotencyKeys, check_callback

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

SUBMISSION = JobType(name="analyses", function="", params_model="NoParams", summary="POST /analyses", internal=True)
"""What an Idempotency-Key of an analysis is claimed for (never enqueued)."""
CANCELLED = "Cancelled on request."
ENDED = ("completed", "failed", "cancelled")


def database_required(method: Callable[P, R]) -> Callable[P, R]:
    """Turn "the database does not answer" into `DatabaseUnavailable` (HTTP 503)."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except OperationalError as error:
            log.warning("database unreachable during %s: %s", method.__name__, str(error).splitlines()[0])
            raise DatabaseUnavailable("The database is unreachable; try again shortly.") from None

    return wrapper


def post_url(value: object, parameter: str = "url") -> tuple[str, str]:
    """(canonical URL, shortcode), or a 422 that says what is wrong with it."""
    try:
        parsed = parse_post_url(value)
    except PostURLRefused as refused:
        problem = str(refused)
        raise ValidationFailed(f"{parameter} {problem}.", problems=[{"parameter": parameter, "problem": problem}]) from None
    return parsed.url, parsed.shortcode


@dataclass(frozen=True)
class Submitted:
    analysis: dict[str, Any]
    created: bool
    """False: the analysis of this post already under way (or the Idempotency-Key's)."""
    replayed: bool = False


class AnalysisService:
    def __init__(self, engine: Engine, connection: Redis, settings: Settings, tasks: TaskService) -> None:
        self.engine = engine
        self.connection = connection
        self.settings = settings
        self.tasks = tasks

    @database_required
    @redis_required
    def submit(self, url: object, idempotency_key: str | None, *, submitted_by: str | None,
               request_id: str | None, callback_url: str | None = None) -> Submitted:
        canonical, shortcode = post_url(url)
        if callback_url is not None:
            check_callback(callback_url, self.settings)
        analysis_id = new_job_id()
        keys = IdempotencyKeys(self.connection)
        if idempotency_key is not None:
            earlier = keys.claim(idempotency_key, analysis_id, SUBMISSION, {"url": canonical},
                                 self.settings.result_ttl, callback_url)
            if earlier is not None and (row := records.read(self.engine, earlier)) is not None:
                return Submitted(analysis_view(row), created=False, replayed=True)
        try:
            row = self._create(analysis_id, canonical, shortcode, submitted_by, request_id, callback_url)
        except BaseException:
            if idempotency_key is not None:
                keys.release(idempotency_key, analysis_id)
            raise
        if row.id != analysis_id and idempotency_key is not None:
            keys.release(idempotency_key, analysis_id)
        return Submitted(analysis_view(row), created=row.id == analysis_id)

    def _create(self, analysis_id: str, url: str, shortcode: str, submitted_by: str | None,
                request_id: str | None, callback_url: str | None) -> Analysis:
        """A new row and its first stage's job, or the analysis of `url` under way."""
        if (active := records.active_for(self.engine, url)) is not None:
            return active
        entries = records.new_stage_entries(stages())
        first_job = new_job_id()
        entries[0]["job_id"] = first_job
        now = records.utcnow()
        row = Analysis(id=analysis_id, url=url, shortcode=shortcode, status="pending", stages=entries,
                       submitted_by=submitted_by, callback_url=callback_url, created_at=now, updated_at=now)
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                session.add(row)
        except IntegrityError:  # submitted at the same moment by someone else: theirs
            active = records.active_for(self.engine, url)
            if active is None:
                raise
            return active
        try:
            self._enqueue(analysis_id, entries[0]["name"], first_job, submitted_by, request_id)
        except BaseException as error:
            self._fail(analysis_id, f"Could not be queued: {type(error).__name__}.")
            raise
        self._confirm_replicated(analysis_id, first_job, "accepted")
        log.info("analysis %s of %s submitted", analysis_id, url)
        return row

    def _enqueue(self, analysis_id: str, stage_name: str, job_id: str, submitted_by: str | None = None,
                 request_id: str | None = None) -> None:
        stage = find(stage_name)
        if stage is None:
            raise AnalysisNotRetryable(f"Stage {stage_name!r} is no longer registered.")
        if not claim(self.connection, job_id):
            return  # enqueued already, by a repair of a stage left with no job (`stranded`)
        enqueue_stage(self.connection, analysis_id, stage, job_id, result_ttl=self.settings.result_ttl,
                      failure_ttl=self.settings.failure_ttl, submitted_by=submitted_by, request_id=request_id)

    def _confirm_replicated(self, analysis_id: str, job_id: str, what: str) -> None:
        """With REDIS_MIN_REPLICAS_ACK, return once that many replicas hold the stage job just
        enqueued (as a task's submission does); else refuse with 503 `not_replicated`.

        The refused analysis is failed, not cancelled nor left to retry itself: the row is
        the record and lives in the database, which no Redis failover rolls back, so once it
        reads failed no copy of its job can run it (a stage job finds it not under way and
        does nothing), a new POST /analyses of the post is not answered with it (only pending
        and running analyses are), and POST /analyses/<id>/retry can still resume it.
        "Cancelled" would say a client asked for it; retrying here would hold the request
        beyond the replicas' wait. Its job is cancelled too, best effort, so that it does not
        run on this master meanwhile; neither counts for /metrics, nor sends the callback.
        """
        if not self.settings.redis_min_replicas_ack:
            return
        confirmed = self.tasks.replication_shortfall(f"analysis {analysis_id}")
        if confirmed is None:
            return
        self.tasks.withdraw(job_id)
        again = "submit it again" if what == "accepted" else "retry it again"
        self._fail(analysis_id, f"Not {what}: Redis replicas did not confirm the job of its next stage in time "
                                f"({confirmed}); {again}.")
        raise QueueNotReplicated(
            f"Analysis {analysis_id} was not {what}: the job of its next stage was written to the Redis master, but "
            f"replicas did not confirm it in time ({confirmed}). The analysis now reads failed and will not run; "
            f"{again} after Retry-After.",
            analysis_id=analysis_id,
        )

    def _fail(self, analysis_id: str, reason: str) -> None:
        def apply(row: Analysis, entries: records.StageEntries) -> None:
            row.status, row.error, row.ended_at = "failed", reason, records.utcnow()
            row.failed_stage = next((e["name"] for e in entries if e["status"] != "completed"), None)

        records.change(self.engine, analysis_id, apply)
        announce(self.connection, analysis_id)

    @database_required
    def get(self, analysis_id: str) -> dict[str, Any]:
        return analysis_view(self._reconciled(self._row(analysis_id)))

    def _row(self, analysis_id: str) -> Analysis:
        row = records.read(self.engine, analysis_id) if len(analysis_id) <= 64 else None
        if row is None:
            raise AnalysisNotFound(f"No analysis has the id {analysis_id!r}.")
        return row

    def _reconciled(self, row: Analysis) -> Analysis:
        """A stage whose job failed without recording it (killed at its hard limit or before it
        marked its stage begun, its worker gone) fails the analysis now, with the job's reason
        (`following`; the workers do the same when they record such a failure)."""
        if row.status not in ("pending", "running"):
            return row
        current = next((e for e in row.stages if e["status"] in ("pending", "running") and e.get("job_id")), None)
        if row.status == "running" and (current is None or current["status"] == "pending"):
            self._hand_on_if_stranded(row)
        if queue_if_stranded(self.connection, row, result_ttl=self.settings.result_ttl,
                             failure_ttl=self.settings.failure_ttl):
            return row
        if current is None:
            return row
        try:
            task = self.tasks.get(current["job_id"])
        except (TaskNotFound, QueueUnavailable):  # Redis flushed or down: the row is still the record
            return row
        if task.status != "failed":
            return row
        if fail_unrecorded_stage(self.engine, self.connection, row.id, str(current["job_id"]), task.error or "failed",
                                 task.ended_at):
            return self._row(row.id)
        return row

    def _hand_on_if_stranded(self, row: Analysis) -> None:
        """A stage stored its output, then its job ended before it handed on (its worker
        killed in between, no retry left): the next stage's job, whose id the same write
        reserved, is enqueued now, as that job would have. Only once the job has ended, so
        a hand-off still under way is not raced; only when the next job is not in Redis."""
        following = next((i for i, e in enumerate(row.stages) if e["status"] == "pending"), None)
        if not following:  # none pending, or the first: submission enqueues that one
            return
        previous, entry = row.stages[following - 1], row.stages[following]
        if previous["status"] != "completed" or not previous.get("job_id") or not entry.get("job_id"):
            return
        if self.connection.exists(Job.key_for(str(entry["job_id"]))):
            return  # (the claim below checks it too; this spares the job read that follows)
        try:
            handing_on = self.tasks.get(str(previous["job_id"]))
        except (TaskNotFound, QueueUnavailable):  # Redis flushed or down: nothing to go on
            return
        if handing_on.status != "failed":
            return
        log.warning("analysis %s: stage %s stored its output but did not hand on; %s queued now",
                    row.id, previous["name"], entry["name"])
        self._enqueue(row.id, str(entry["name"]), str(entry["job_id"]), submitted_by=row.submitted_by)

    @database_required
    def history(self, *, url: object | None, status: str | None, cursor: str | None,
                limit: int) -> tuple[list[dict[str, Any]], str | None]:
        canonical = post_url(url)[0] if url is not None else None
        rows, next_cursor = listing.page(self.engine, url=canonical, status=status, cursor=cursor, limit=limit)
        return [analysis_view(row) for row in rows], next_cursor

    @database_required
    @redis_required
    def cancel(self, analysis_id: str) -> dict[str, Any]:
        """Stop the running stage, cancel those not started; the outputs so far are kept."""
        self._row(analysis_id)

        def apply(row: Analysis, entries: records.StageEntries) -> list[str]:
            if row.status not in ("pending", "running"):
                raise AnalysisAlreadyEnded(
                    f"Analysis {row.id} has already ended as {row.status}; there is nothing to cancel.",
                    status=row.status)
            jobs = [e["job_id"] for e in entries if e["status"] in ("pending", "running") and e.get("job_id")]
            for entry in entries:
                if entry["status"] in ("pending", "running"):
                    entry.update(status="cancelled", error=CANCELLED, ended_at=records.utcnow().isoformat())
            row.status, row.error, row.ended_at = "cancelled", CANCELLED, records.utcnow()
            return jobs

        for job_id in records.change(self.engine, analysis_id, apply) or []:
            try:
                self.tasks.cancel(job_id)
            except (TaskNotFound, TaskAlreadyEnded):
                pass  # never enqueued yet, or ended in the same moment: its stage reads the row
        announce(self.connection, analysis_id)
        deliver_if_ended(self.engine, self.connection, analysis_id)
        log.info("analysis %s cancelled", analysis_id)
        return analysis_view(self._row(analysis_id))

    @database_required
    @redis_required
    def retry(self, analysis_id: str) -> dict[str, Any]:
        """Resume a failed or cancelled analysis at its first stage not completed."""
        self._row(analysis_id)
        job_id = new_job_id()

        def apply(row: Analysis, entries: records.StageEntries) -> str:
            if row.status not in ("failed", "cancelled"):
                raise AnalysisNotRetryable(
                    f"Analysis {row.id} is {row.status}; only a failed or cancelled analysis can be retried.",
                    status=row.status)
            resume = next((i for i, e in enumerate(entries) if e["status"] != "completed"), None)
            if resume is None:
                raise AnalysisNotRetryable(f"Analysis {row.id} has no stage left to run.", status=row.status)
            for entry in entries[resume:]:
                entry.update(status="pending", output=None, error=None, worker=None, job_id=None,
                             started_at=None, ended_at=None)
            entries[resume]["job_id"] = job_id
            row.status, row.error, row.failed_stage, row.ended_at = "pending", None, None, None
            row.callback = None  # delivered again at its next end
            return str(entries[resume]["name"])

        try:
            stage_name = records.change(self.engine, analysis_id, apply)
        except IntegrityError:
            raise AnalysisNotRetryable(
                f"Another analysis of this post is under way; analysis {analysis_id} cannot resume now.") from None
        assert stage_name is not None
        announce(self.connection, analysis_id)
        try:
            self._enqueue(analysis_id, stage_name, job_id)
        except BaseException as error:
            self._fail(analysis_id, f"Could not be queued: {type(error).__name__}.")
            raise
        self._confirm_replicated(analysis_id, job_id, "resumed")
        log.info("analysis %s resumed at stage %s", analysis_id, stage_name)
        return analysis_view(self._row(analysis_id))
