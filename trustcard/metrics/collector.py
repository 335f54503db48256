"""How the figures are read: at scrape time, from Redis, by a prometheus_client collector.

Nothing is cached between scrapes, so every web process answers the same figures. One
scrape is two pipelined Redis round trips: the counter hashes, each queue's length and
head, the worker registry and Redis' clock; then the head jobs' enqueue times and the
workers' states. A Redis error escapes `collect` (and `generate_latest`): the endpoint
answers 503 rather than figures that look like zeros.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from rq import worker_registration
from rq.job import Job
from rq.queue import Queue
from rq.utils import utcparse
from rq.worker import WorkerStatus

from trustcard.catalogue import JOB_TYPES, QUEUE_NAMES
from trustcard.metrics.outcomes import DURATION_BUCKETS, SubmissionOutcome, TaskOutcome
from trustcard.metrics.store import (
    INF_BOUND,
    SEPARATOR,
    SUBMISSIONS_KEY,
    SUM_FIELD,
    TASK_DURATION_KEY,
    TASKS_ENDED_KEY,
)

if TYPE_CHECKING:
    from redis import Redis

WORKER_STATES = ("busy", "idle")


@dataclass
class Histogram:
    """One type's run times: counts per bucket (not cumulative) and their sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total_seconds: float = 0.0

    def add(self, bound: str, count: int) -> None:
        """A stored bucket; a bound no longer among the buckets goes to the next larger one."""
        value = math.inf if bound == INF_BOUND else float(bound)
        index = next((i for i, upper in enumerate(DURATION_BUCKETS) if value <= upper), len(DURATION_BUCKETS))
        self.counts[index] += count

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0
        buckets = []
        for upper, count in zip((*DURATION_BUCKETS, math.inf), self.counts, strict=True):
            running += count
            buckets.append((floatToGoString(upper), float(running)))
        return buckets


@dataclass
class Snapshot:
    """Every figure of one scrape, as read from Redis."""

    tasks_ended: dict[tuple[str, str], int]
    durations: dict[str, Histogram]
    submissions: dict[str, int]
    queue_depths: dict[str, int]
    oldest_ages: dict[str, float]
    workers: dict[str, int]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_snapshot(connection: Redis) -> Snapshot:
    """Read every figure, in two round trips; Redis errors escape."""
    with connection.pipeline(transaction=False) as pipeline:
        pipeline.time()
        pipeline.hgetall(TASKS_ENDED_KEY)
        pipeline.hgetall(TASK_DURATION_KEY)
        pipeline.hgetall(SUBMISSIONS_KEY)
        pipeline.smembers(worker_registration.REDIS_WORKER_KEYS)
        for name in QUEUE_NAMES:
            key = Queue.redis_queue_namespace_prefix + name
            pipeline.llen(key)
            pipeline.lindex(key, 0)
        clock, ended_raw, duration_raw, submissions_raw, worker_keys, *queue_raw = pipeline.execute()
    redis_now = clock[0] + clock[1] / 1_000_000
    depths = {name: int(queue_raw[2 * i]) for i, name in enumerate(QUEUE_NAMES)}
    heads = {name: _text(queue_raw[2 * i + 1]) for i, name in enumerate(QUEUE_NAMES) if queue_raw[2 * i + 1]}
    workers = sorted(_text(key) for key in worker_keys)

    enqueued: dict[str, bytes | None] = {}
    states: list[bytes | None] = []
    if heads or workers:
        with connection.pipeline(transaction=False) as pipeline:
            for job_id in heads.values():
                pipeline.hget(Job.redis_job_namespace_prefix + job_id, "enqueued_at")
            for key in workers:
                pipeline.hget(key, "state")
            replies = pipeline.execute()
        enqueued = dict(zip(heads, replies[: len(heads)], strict=True))
        states = replies[len(heads):]

    return Snapshot(
        tasks_ended=_tasks_ended(ended_raw),
        durations=_durations(duration_raw),
        submissions={_text(name): int(count) for name, count in submissions_raw.items()},
        queue_depths=depths,
        oldest_ages={name: _age(enqueued.get(name), redis_now) for name in QUEUE_NAMES},
        workers=_worker_states(states),
    )


def _tasks_ended(raw: dict[bytes, bytes]) -> dict[tuple[str, str], int]:
    counts = {}
    for field_name, count in raw.items():
        job_type, _, outcome = _text(field_name).rpartition(SEPARATOR)
        counts[(job_type, outcome)] = int(count)
    return counts


def _durations(raw: dict[bytes, bytes]) -> dict[str, Histogram]:
    histograms: dict[str, Histogram] = {}
    for field_name, value in raw.items():
        job_type, _, part = _text(field_name).rpartition(SEPARATOR)
        histogram = histograms.setdefault(job_type, Histogram())
        if part == SUM_FIELD:
            histogram.total_seconds = float(value)
        else:
            histogram.add(part, int(value))
    return histograms


def _age(enqueued_at: bytes | None, redis_now: float) -> float:
    """Seconds the queue's head job has waited; 0 for an empty queue or an unreadable head."""
    if not enqueued_at:
        return 0.0
    try:
        moment = utcparse(_text(enqueued_at))
    except ValueError:
        return 0.0
    return max(0.0, redis_now - moment.timestamp())


def _worker_states(states: list[bytes | None]) -> dict[str, int]:
    """Busy and idle workers; a registry entry whose worker key expired is no worker."""
    counts = dict.fromkeys(WORKER_STATES, 0)
    for state in states:
        if state is None:
            continue
        counts["busy" if _text(state) == WorkerStatus.BUSY.value else "idle"] += 1
    return counts


class RedisCollector:
    """The service's figures, read from Redis on every `collect` (every scrape)."""

    def __init__(self, connection: Redis) -> None:
        self.connection = connection

    def describe(self) -> Iterable[Metric]:
        """The families without samples: registering the collector reads nothing from Redis."""
        return self._families(None)

    def collect(self) -> Iterable[Metric]:
        return self._families(read_snapshot(self.connection))

    def _families(self, snapshot: Snapshot | None) -> Iterator[Metric]:
        depth = GaugeMetricFamily("trustcard_queue_depth", "Jobs waiting on each queue.", labels=["queue"])
        age = GaugeMetricFamily(
            "trustcard_queue_oldest_job_age_seconds",
            "Seconds the job at the head of each queue (the next one to run) has waited; 0 when empty.",
            labels=["queue"],
        )
        ended = CounterMetricFamily(
            "trustcard_tasks_ended", "Tasks ended, by job type and outcome.", labels=["type", "outcome"]
        )
        duration = HistogramMetricFamily(
            "trustcard_task_duration_seconds", "Run time (started to ended) of ended tasks.", labels=["type"]
        )
        workers = GaugeMetricFamily("trustcard_workers", "Registered workers, busy or idle.", labels=["state"])
        submissions = CounterMetricFamily(
            "trustcard_submissions", "Answers to submissions, by outcome.", labels=["outcome"]
        )
        if snapshot is not None:
            for name in QUEUE_NAMES:
                depth.add_metric([name], snapshot.queue_depths[name])
                age.add_metric([name], snapshot.oldest_ages[name])
            types = [job_type.name for job_type in JOB_TYPES]
            types += sorted(({t for t, _ in snapshot.tasks_ended} | set(snapshot.durations)) - set(types))
            outcomes = [outcome.value for outcome in TaskOutcome]
            for job_type in types:
                for outcome in outcomes:
                    ended.add_metric([job_type, outcome], snapshot.tasks_ended.get((job_type, outcome), 0))
                histogram = snapshot.durations.get(job_type, Histogram())
                duration.add_metric([job_type], histogram.cumulative(), histogram.total_seconds)
            for (job_type, outcome), count in sorted(snapshot.tasks_ended.items()):
                if outcome not in outcomes:  # written by a newer version: still shown
                    ended.add_metric([job_type, outcome], count)
            for state in WORKER_STATES:
                workers.add_metric([state], snapshot.workers[state])
            for submission in SubmissionOutcome:
                submissions.add_metric([submission.value], snapshot.submissions.get(submission.value, 0))
        yield from (depth, age, ended, duration, workers, submissions)


def metrics_registry(connection: Redis) -> CollectorRegistry:
    """A registry of this app's own (not prometheus_client's global one, which would add
    this one process's figures and be shared by every app a test builds)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(connection))
    return registry
