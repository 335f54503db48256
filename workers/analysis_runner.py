"""One stage of an analysis, as its own RQ job: run it, store its output, hand on to the next.

Chaining is the stage's own hand-off, not RQ's dependencies: the next stage's job is
enqueued at the end of this one, only after this stage's output is durably stored (the
write is retried through database hiccups). A dependent released by RQ would be released
by the worker's bookkeeping whether or not our write landed, and RQ releases dependents
in a separate step after success, so a worker killed in between would strand the analysis.
Here every step can be run again: a stage job that finds its stage already completed only
does the hand-off, and one that finds the analysis cancelled or ended does nothing.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

from rq import get_current_job
from rq.job import Job
from rq.timeouts import JobTimeoutException

from trustcard.analyses import records
from trustcard.analyses.callback import deliver_if_ended
from trustcard.analyses.events import RETRY_MARK, announce
from trustcard.analyses.stage_jobs import claim, enqueue_stage, new_job_id
from trustcard.analyses.stages import TRUST_STAGE, Stage, find
from trustcard.config import load_settings
from trustcard.connections import redis_client
from trustcard.models import Analysis
from workers import storage
from workers.progress import report_progress

log = logging.getLogger(__name__)

StageFunction = Callable[[str, dict[str, Any]], dict[str, Any]]


class UnknownStage(Exception):
    """The job names a stage that is not registered in this worker."""


def _function(stage: Stage) -> StageFunction:
    module_name, _, name = stage.function.rpartition(".")
    function: StageFunction = getattr(importlib.import_module(module_name), name)
    return function


def _now() -> str:
    return records.utcnow().isoformat().replace("+00:00", "Z")


def _write_deadline(stage: Stage) -> float:
    """Writes are retried for as long as the stage may run (its hard limit ends them anyway)."""
    return time.monotonic() + stage.hard_timeout


def run_stage(analysis_id: str, stage: str) -> dict[str, Any]:
    """The `analysis.stage` job. Its return value is a summary; the record is the row."""
    declared = find(stage)
    if declared is None:
        raise UnknownStage(f"Stage {stage!r} is not registered in this worker.")
    job = get_current_job()
    engine = storage.engine()
    worker = job.worker_name if job is not None else None
    begun = records.change_durably(engine, analysis_id, lambda row, entries: _begin(row, entries, stage, worker),
                                   _write_deadline(declared))
    if begun is None:
        return {"analysis_id": analysis_id, "stage": stage, "ran": False, "reason": "no such analysis"}
    action, url, found, position = begun
    if action == "skip":
        return {"analysis_id": analysis_id, "stage": stage, "ran": False, "reason": "analysis not under way"}
    if action == "run":
        announce(_connection(job), analysis_id)
        report_progress(position[0] * 100 // position[1], declared.label, analysis_id=analysis_id, analysis_stage=stage)
        output = _run(declared, job, engine, analysis_id, url, found)
        next_job = records.change_durably(
            engine, analysis_id, lambda row, entries: _finish(row, entries, stage, output), _write_deadline(declared)
        )
    else:  # stored by an earlier run of this job, which ended before its hand-off
        next_job = records.change_durably(
            engine, analysis_id, lambda row, entries: _next_job(row, entries, stage), _write_deadline(declared)
        )
    announce(_connection(job), analysis_id)
    if next_job is not None:
        _hand_off(job, analysis_id, *next_job)
    else:
        deliver_if_ended(engine, _connection(job), analysis_id)
    return {"analysis_id": analysis_id, "stage": stage, "ran": action == "run"}


def _run(declared: Stage, job: Job | None, engine: Any, analysis_id: str, url: str,
         found: dict[str, Any]) -> dict[str, Any]:
    """The stage's function; when it raises (or runs out of time) on its last attempt, the
    analysis fails with the stage and the reason before the exception goes on to RQ."""
    try:
        return _function(declared)(url, found)
    except JobTimeoutException:
        _record_failure(engine, declared, job, analysis_id, f"timed out after {declared.soft_timeout} s")
        raise
    except Exception as error:  # recorded, then raised again: never swallowed
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:500]
        _record_failure(engine, declared, job, analysis_id, reason)
        raise


def _record_failure(engine: Any, declared: Stage, job: Job | None, analysis_id: str, reason: str) -> None:
    final = job is None or not job.retries_left
    records.change_durably(
        engine, analysis_id, lambda row, entries: _fail(row, entries, declared.name, reason, final),
        _write_deadline(declared),
    )
    announce(_connection(job), analysis_id)
    if final:
        deliver_if_ended(engine, _connection(job), analysis_id)


def _entry(entries: records.StageEntries, stage: str) -> dict[str, Any]:
    return next(entry for entry in entries if entry["name"] == stage)


def _begin(row: Analysis, entries: records.StageEntries, stage: str,
           worker: str | None) -> tuple[str, str, dict[str, Any], tuple[int, int]]:
    """What this run does: "run" the stage, "handoff" only (already stored), or "skip"."""
    entry = _entry(entries, stage)
    position = (entries.index(entry), len(entries))
    if entry["status"] == "completed" and row.status in ("pending", "running"):
        return "handoff", row.url, {}, position
    if row.status not in ("pending", "running") or entry["status"] not in ("pending", "running"):
        return "skip", row.url, {}, position
    found = {e["name"]: e["output"] for e in entries[: position[0]] if e["status"] == "completed"}
    entry.update(status="running", worker=worker, started_at=_now(), ended_at=None, error=None,
                 runs=int(entry.get("runs") or 0) + 1)
    row.status = "running"
    return "run", row.url, found, position


def _finish(row: Analysis, entries: records.StageEntries, stage: str,
            output: dict[str, Any]) -> tuple[str, str] | None:
    """Store the output; the analysis ends after its last stage. The next stage's job id, if any."""
    entry = _entry(entries, stage)
    entry.update(status="completed", output=output, error=None, ended_at=_now())
    if row.status not in ("pending", "running"):
        return None  # cancelled meanwhile: the output is kept, nothing more runs
    if stage == TRUST_STAGE:
        score = output.get("trust_score")
        row.trust_score = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None
    return _next_job(row, entries, stage)


def _next_job(row: Analysis, entries: records.StageEntries, stage: str) -> tuple[str, str] | None:
    """(stage, job id) of the stage after `stage`, its id given now; the analysis completes
    when there is none."""
    if row.status not in ("pending", "running"):
        return None
    position = entries.index(_entry(entries, stage))
    if position + 1 == len(entries):
        row.status, row.ended_at = "completed", records.utcnow()
        return None
    following = entries[position + 1]
    following["job_id"] = following.get("job_id") or new_job_id()
    return str(following["name"]), str(following["job_id"])


def _fail(row: Analysis, entries: records.StageEntries, stage: str, reason: str, final: bool) -> None:
    entry = _entry(entries, stage)
    if entry["status"] != "running":
        return
    if not final:  # RQ runs it again by its retry policy
        entry["error"] = f"{reason} {RETRY_MARK}"
        return
    entry.update(status="failed", error=reason, ended_at=_now())
    if row.status in ("pending", "running"):
        row.status, row.failed_stage, row.ended_at = "failed", stage, records.utcnow()
        row.error = f"Stage {stage} failed: {reason}"


def _connection(job: Job | None) -> Any:
    return job.connection if job is not None else redis_client(load_settings())


def _hand_off(job: Job | None, analysis_id: str, stage_name: str, job_id: str) -> None:
    """Enqueue the next stage's job, once: an id already in Redis, or claimed by a repair
    (`trustcard.analyses.stranded`), is left as it is."""
    stage = find(stage_name)
    if stage is None:
        raise UnknownStage(f"Stage {stage_name!r} is not registered in this worker.")
    connection = _connection(job)
    if not claim(connection, job_id):
        return
    settings = load_settings()
    meta = job.meta if job is not None else {}
    enqueue_stage(connection, analysis_id, stage, job_id, result_ttl=settings.result_ttl,
                  failure_ttl=settings.failure_ttl, submitted_by=meta.get("submitted_by"),
                  request_id=meta.get("request_id"))
    log.info("analysis %s: stage %s queued on %s", analysis_id, stage_name, stage.queue)
