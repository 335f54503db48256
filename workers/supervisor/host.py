"""`JobProcessHost`: all the job process may ask of its worker.

The job process is a fork of the supervisor, so it holds a copy of the whole worker
object; it uses it only through this protocol, which the supervisor implements with
public methods (RQ's private ones stay behind `trustcard.rq_seams`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from workers.supervisor.batches import BatchWorker

if TYPE_CHECKING:
    from redis import Redis
    from rq.executions import Execution
    from rq.job import Job
    from rq.queue import Queue

    from trustcard.rq_seams import ExcInfo


class JobProcessHost(BatchWorker, Protocol):
    """What the job process needs of its worker (the supervisor's copy in this process)."""

    connection: Redis
    queues: list[Queue]
    job_class: type[Job]
    serializer: Any
    queue_class: type[Queue]
    default_result_ttl: int
    death_penalty_class: Any
    executions: dict[str, Execution]

    def become_job_process(self) -> None: ...

    def ordered_queues(self) -> list[Queue]: ...

    def reorder_queues(self, reference_queue: Queue) -> None: ...

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int: ...

    def refuse_unreadable(self, job: Job, queue: Queue) -> bool: ...

    def finish_success(self, job: Job, queue: Queue, execution: Execution, return_value: Any) -> None: ...

    def finish_failure(self, job: Job, queue: Queue, execution: Execution, exc_info: ExcInfo) -> None: ...

    def recover_after_outage(self, job: Job, queue: Queue) -> None: ...

    def recover_after_failover(self) -> list[tuple[Job, Queue]]: ...

    def put_back_if_still_taken(self, job: Job, queue: Queue) -> None: ...

    def settled_without_me(self, job: Job) -> str | None: ...
