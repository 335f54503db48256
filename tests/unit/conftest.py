"""Fixtures of the unit tests that drive the worker on fakeredis."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from workers.supervisor import JobProcessSupervisor


@pytest.fixture
def queue(fake_redis: fakeredis.FakeRedis) -> Queue:
    """The `analysis` queue, JSON as the service writes it."""
    return Queue("analysis", connection=fake_redis, serializer=JSONSerializer)


@pytest.fixture
def worker(queue: Queue, fake_redis: fakeredis.FakeRedis) -> Iterator[JobProcessSupervisor]:
    """The Procfile's worker class on that queue, never started: its methods are called directly."""
    yield JobProcessSupervisor([queue], connection=fake_redis)
