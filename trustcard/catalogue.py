"""The catalogue of job types: each declared once, with its queue, function and limits.

The web enqueues by the dotted `function` path and never imports job code; workers
run only functions named here (see `workers.job.CatalogueJob`). The Procfile, compose.yaml and
the worker settings take their queue names from `QUEUE_NAMES`, and a test proves it.
`JOB_TYPES` are the types clients submit (the API routes, the OpenAPI document, the
CLI); `ALL_JOB_TYPES` adds the internal ones (webhook delivery), which only our own
code enqueues but workers must still run.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING

from trustcard.analyses.stages import DEFAULT_STAGES
from trustcard.queue_names import ANALYSIS_QUEUE, PRIORITY_ORDER, WEBHOOKS_QUEUE

if TYPE_CHECKING:
    from trustcard.params import JobParams


@dataclass(frozen=True)
class JobType:
    """One kind of work. `None` limits mean "the settings' defaults"."""

    name: str
    function: str
    params_model: str
    """Its parameter model's name in `trustcard.params`: see `params`."""
    summary: str
    queue: str = ANALYSIS_QUEUE
    soft_timeout: int | None = None
    hard_timeout: int | None = None
    result_ttl: int | None = None
    retries: int = 0
    retry_backoff: tuple[int, ...] = ()
    """Seconds to wait before each retry; the last one repeats. Empty: retry at once."""
    internal: bool = False
    """Enqueued by the service itself, never by clients: no route, no OpenAPI path."""

    @property
    def params(self) -> type[JobParams]:
        """The model its parameters are validated with. Looked up on first use: the web
        validates, a worker only runs jobs, and importing pydantic would cost each worker
        process about 10 MB."""
        model: type[JobParams] = getattr(import_module("trustcard.params"), self.params_model)
        return model

    @property
    def route(self) -> str:
        """The path under /tasks/ that submits this job type: `test.add` -> `test/add`."""
        return self.name.replace(".", "/")


JOB_TYPES: tuple[JobType, ...] = (
    JobType(
        name="test.add",
        function="workers.diagnostics.add",
        params_model="AddParams",
        summary="Add two numbers; the result is their sum.",
    ),
    JobType(
        name="test.sleep",
        function="workers.diagnostics.sleep",
        params_model="SleepParams",
        summary='Sleep, then answer "Slept for N seconds".',
    ),
    JobType(
        name="test.long",
        function="workers.diagnostics.long_task",
        params_model="NoParams",
        summary="Run 10 s in the five analysis stages, reporting progress.",
    ),
    JobType(
        name="test.fail",
        function="workers.diagnostics.fail",
        params_model="FailParams",
        summary="Raise an error with the given message, after one retry a second later.",
        retries=1,
        retry_backoff=(1,),
    ),
    JobType(
        name="test.tally",
        function="workers.diagnostics.tally",
        params_model="TallyParams",
        summary="Count this run in Redis, run `seconds`, answer twice `x`; retried once at once (the chaos soak's).",
        retries=1,
    ),
    JobType(
        name="analysis.process_post",
        function="workers.analysis.process_post",
        params_model="PostParams",
        summary="Analyse an Instagram post (placeholder stages until real models exist).",
        retries=2,
        retry_backoff=(10, 60),
    ),
)

WEBHOOK_DELIVERY = JobType(
    name="webhooks.deliver",
    function="workers.webhooks.deliver",
    params_model="NoParams",
    summary="POST a task's final view to its Callback-URL, signed; retried with back-off for a day.",
    queue=WEBHOOKS_QUEUE,
    soft_timeout=25,
    hard_timeout=30,
    result_ttl=86400,
    retries=10,
    retry_backoff=(5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800),
    internal=True,
)
"""Short limits: one attempt is a connect (5 s) and a read (10 s). The waits add up to
23.7 hours, so the eleventh attempt comes about a day after the first, then it gives up.
Its queue comes first in `QUEUE_NAMES`: deliveries are small and late ones are useless,
so a worker takes them before a backlog of analyses."""

ANALYSIS_STAGE = JobType(
    name="analysis.stage",
    function="workers.analysis_runner.run_stage",
    params_model="NoParams",
    summary="Run one stage of an analysis, store its output, hand the analysis on to the next stage.",
    internal=True,
)
"""Each stage's job: its queue, limits and retries come from its stage declaration
(`trustcard.analyses.stages`) when it is enqueued, not from here."""

ANALYSIS_DELIVERY = JobType(
    name="analyses.deliver",
    function="workers.analysis_webhooks.deliver",
    params_model="NoParams",
    summary="POST an ended analysis to its Callback-URL, signed; retried as task deliveries are.",
    queue=WEBHOOKS_QUEUE,
    soft_timeout=WEBHOOK_DELIVERY.soft_timeout,
    hard_timeout=WEBHOOK_DELIVERY.hard_timeout,
    result_ttl=WEBHOOK_DELIVERY.result_ttl,
    retries=WEBHOOK_DELIVERY.retries,
    retry_backoff=WEBHOOK_DELIVERY.retry_backoff,
    internal=True,
)

ALL_JOB_TYPES: tuple[JobType, ...] = (WEBHOOK_DELIVERY, *JOB_TYPES, ANALYSIS_STAGE, ANALYSIS_DELIVERY)
BY_NAME: dict[str, JobType] = {job_type.name: job_type for job_type in ALL_JOB_TYPES}
BY_FUNCTION: dict[str, JobType] = {job_type.function: job_type for job_type in ALL_JOB_TYPES}
_USED_QUEUES = {job_type.queue for job_type in ALL_JOB_TYPES} | {stage.queue for stage in DEFAULT_STAGES}
QUEUE_NAMES: tuple[str, ...] = tuple(
    [name for name in PRIORITY_ORDER if name in _USED_QUEUES] + sorted(_USED_QUEUES - set(PRIORITY_ORDER))
)
"""Every queue a job type or a stage uses, in the order a worker serving all of them
looks at them (`trustcard.queue_names.PRIORITY_ORDER`)."""


def find_by_route(route: str) -> JobType | None:
    """The job type submitted at /tasks/<route>, or None (also for an internal type)."""
    job_type = BY_NAME.get(route.strip("/").replace("/", "."))
    return None if job_type is None or job_type.internal else job_type
