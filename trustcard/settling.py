"""One settler of abandoned tasks at a time, per queue: the API's status read and the workers' check.

Both settle a task whose worker vanished through RQ's started-registry clean-up, which is not
atomic: it reads the expired entries, then fails or retries each job. Two clean-ups of the
same entry at once would both retry it, queueing the job twice. They take this lock first; a
settler that finds it taken leaves the task to the one holding it (the next read sees its end).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis import Redis

LOCK_PREFIX = "trustcard:settling:"
LOCK_SECONDS = 10
"""Longest a settler may hold the lock (a clean-up takes milliseconds; a settler that died
holding it frees it this late)."""

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@contextmanager
def settling(connection: Redis, queue_name: str) -> Iterator[bool]:
    """Hold the queue's settling lock for the block; yields False when another settler has it."""
    key, token = LOCK_PREFIX + queue_name, uuid.uuid4().hex
    held = bool(connection.set(key, token, nx=True, ex=LOCK_SECONDS))
    try:
        yield held
    finally:
        if held:
            connection.eval(_RELEASE, 1, key, token)  # only our own: it may have expired and been retaken
