"""Every private name of RQ that this project touches, in one place.

RQ's public API does not offer what a worker with a long-lived job process needs (its
job ordering, its end-of-job handlers, its stop bookkeeping), so the worker reaches into
RQ. Each such reach goes through a function here, and `SEAMS` lists them all with the
shape they must have: `tests/unit/test_rq_seams.py` checks each against the installed
RQ, so an upgrade that moves one fails a test instead of breaking a worker in production.

No Flask, no job code: importable by the web and by workers alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rq.job import JobStatus
from rq.job_lifecycle import record_job_failure as _rq_record_job_failure
from rq.worker import Worker

from trustcard import job_results, rq_speedups

if TYPE_CHECKING:

    from redis.client import Pipeline
    from rq.executions import Execution
    from rq.job import Job
    from rq.queue import Queue
    from rq.scheduler import RQScheduler
    from rq.worker import BaseWorker

ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]


@dataclass(frozen=True)
class Seam:
    """One private name: where it lives, what it is, and the parameters it must take."""

    owner: str
    """Dotted path of the class or module that holds it."""
    name: str
    kind: str
    """"method" (checked by signature), "attribute" (set on a fresh instance), "class
    attribute", or "function" (a module-level function)."""
    parameters: tuple[str, ...] = ()


SEAMS: tuple[Seam, ...] = (
    Seam("rq.worker.Worker", "_ordered_queues", "attribute"),
    Seam("rq.worker.Worker", "_dequeue_strategy", "attribute"),
    Seam("rq.worker.Worker", "_is_horse", "attribute"),
    Seam("rq.worker.Worker", "_horse_pid", "attribute"),
    Seam("rq.worker.Worker", "_stop_requested", "attribute"),
    Seam("rq.worker.Worker", "_stopped_job_id", "attribute"),
    Seam("rq.worker.Worker", "_shutdown_requested_date", "attribute"),
    Seam("rq.worker.Worker", "_finalize_success", "method", ("self", "job", "queue", "execution", "return_value")),
    Seam("rq.worker.Worker", "_finalize_failure", "method", ("self", "job", "queue", "execution", "exc_info")),
    Seam("rq.worker.Worker", "_handle_stopped_job", "method", ("self", "job", "queue", "execution")),
    Seam("rq.worker.Worker", "_install_signal_handlers", "method", ("self",)),
    Seam("rq.worker.Worker", "_start_scheduler", "method",
         ("self", "burst", "logging_level", "date_format", "log_format")),
    Seam("rq.job.Job", "_execute", "method", ("self",)),
    Seam("rq.job.Job", "_status", "attribute"),
    Seam("rq.job.Job", "_result", "attribute"),
    Seam("rq.job.Job", "_success_callback_name", "attribute"),
    Seam("rq.executions.Execution", "_job", "attribute"),
    Seam("rq.scheduler.RQScheduler", "_status", "attribute"),
    Seam("rq.scheduler.RQScheduler", "_queue_names", "attribute"),
    Seam("rq.job_lifecycle", "record_job_failure", "function", ("job", "exc_string", "pipeline")),
    # Public, but replaced by `job_results.install`: ours must take what RQ's callers pass.
    Seam("rq.results.Result", "fetch_latest", "method", ("job", "serializer", "timeout")),
    Seam("rq.results.Result", "all", "method", ("job", "serializer")),
    Seam("rq.results.Result", "count", "method", ("job",)),
    *(Seam(module, "resolve_serializer", "function", ("serializer",))
      for module in rq_speedups.MODULES_USING_RESOLVE_SERIALIZER),
    *(Seam(module, "utcparse", "function", ("string",)) for module in rq_speedups.MODULES_USING_UTCPARSE),
)


def install_speedups() -> None:
    """RQ's serializer lookup and timestamp parsing, made cheap (see `rq_speedups`), and
    RQ's result readers taught to find results kept in the job hash (`job_results`)."""
    rq_speedups.install()
    job_results.install()


# --- the worker ---------------------------------------------------------------------------

def ordered_queues(worker: BaseWorker) -> list[Queue]:
    """The worker's queues in the order its dequeue strategy takes them now."""
    queues: list[Queue] = worker._ordered_queues
    return queues


def set_dequeue_strategy(worker: BaseWorker, strategy: Any) -> None:
    worker._dequeue_strategy = strategy


def mark_job_process(worker: BaseWorker) -> None:
    """This copy of the worker runs jobs: RQ then skips its teardown's worker bookkeeping."""
    worker._is_horse = True


def set_job_process_pid(worker: BaseWorker, pid: int) -> None:
    """What RQ's `horse_pid` answers (0: none)."""
    worker._horse_pid = pid


def stop_requested(worker: BaseWorker) -> bool:
    return bool(worker._stop_requested)


def set_stop_requested(worker: BaseWorker) -> None:
    worker._stop_requested = True


def set_shutdown_requested_date(worker: BaseWorker, when: datetime) -> None:
    worker._shutdown_requested_date = when


def shutdown_requested_date(worker: BaseWorker) -> datetime | None:
    when: datetime | None = worker._shutdown_requested_date
    return when


def stopped_job_id(worker: BaseWorker) -> str | None:
    """The job RQ's `handle_job_failure` is to record as STOPPED rather than FAILED."""
    job_id: str | None = worker._stopped_job_id
    return job_id


def record_stopped(worker: BaseWorker, job: Job, queue: Queue, execution: Execution) -> None:
    """RQ's own recording of a job stopped on request (status STOPPED, no retry)."""
    worker._stopped_job_id = job.id
    worker._handle_stopped_job(job, queue, execution)


def finalize_success(worker: BaseWorker, job: Job, queue: Queue, execution: Execution, return_value: Any) -> None:
    """RQ's whole success path: callbacks, `Retry` results, dependents, webhooks."""
    worker._finalize_success(job, queue, execution, return_value)


def finalize_failure(worker: BaseWorker, job: Job, queue: Queue, execution: Execution, exc_info: ExcInfo) -> None:
    """RQ's whole failure path: failure callback, exception handlers, retries, dependents."""
    worker._finalize_failure(job, queue, execution, exc_info)


def install_signal_handlers(worker: BaseWorker) -> None:
    worker._install_signal_handlers()


def start_rq_scheduler(worker: BaseWorker, burst: bool, logging_level: Any, date_format: str, log_format: str) -> None:
    """RQ's own way of starting the scheduler (in burst mode: run it once, in this process)."""
    Worker._start_scheduler(worker, burst, logging_level, date_format, log_format)


# --- jobs, executions, the scheduler --------------------------------------------------------

def mark_finished(job: Job, return_value: Any) -> None:
    """The job object as RQ leaves it after a success (status and result in memory)."""
    job._status = JobStatus.FINISHED
    job._result = return_value


def result_of(job: Job) -> Any:
    return job._result


def has_success_callback(job: Job) -> bool:
    return bool(job._success_callback_name)


def cache_job(execution: Execution, job: Job | None) -> None:
    """What RQ's `get_current_job()` returns for this execution without fetching."""
    execution._job = job


def cached_job(execution: Execution) -> Job | None:
    job: Job | None = execution._job
    return job


def mark_scheduler_started(scheduler: RQScheduler) -> None:
    """What RQ's `RQScheduler.start` sets before it forks (an in-process scheduler forks nothing)."""
    scheduler._status = scheduler.Status.STARTED


def scheduler_queue_names(scheduler: RQScheduler) -> set[str]:
    """The queues whose scheduler locks this scheduler wants."""
    names: set[str] = scheduler._queue_names
    return names


def record_job_failure(job: Job, exc_string: str, pipeline: Pipeline) -> None:
    """RQ's recording of a failure outside any worker (status, registry, result)."""
    _rq_record_job_failure(job, exc_string, pipeline)
