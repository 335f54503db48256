"""Where a Redis database's bytes go: `MEMORY USAGE` summed per kind of key.

A key's kind is its name with every task id (a UUID or 32 hex digits) replaced by `<id>`,
so `rq:job:<id>` sums every job hash and `rq:finished:analysis` stays one shared sorted
set. Comparing two snapshots taken before and after N tasks finish gives the bytes per
task, per kind, including a task's share of the keys all tasks share (registries,
counters). Used by `scripts/redis_bytes.py`, `scripts/bench.py` and the tests.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from redis import Redis

_TASK_ID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}")


def key_kind(key: bytes) -> str:
    """`rq:job:4f...` -> `rq:job:<id>`; keys without a task id are their own kind."""
    return _TASK_ID.sub(b"<id>", key).decode(errors="replace")


@dataclass(frozen=True)
class MemorySnapshot:
    """Bytes and number of keys per kind of key, in one database."""

    bytes_by_kind: Counter[str]
    keys_by_kind: Counter[str]

    @property
    def total(self) -> int:
        return sum(self.bytes_by_kind.values())


def snapshot(connection: Redis) -> MemorySnapshot:
    """`MEMORY USAGE key SAMPLES 0` (every element counted, not sampled) of every key."""
    bytes_by_kind: Counter[str] = Counter()
    keys_by_kind: Counter[str] = Counter()
    keys = list(connection.scan_iter(count=1000))
    with connection.pipeline(transaction=False) as pipeline:
        for key in keys:
            pipeline.memory_usage(key, samples=0)
        usages = pipeline.execute()
    for key, usage in zip(keys, usages, strict=True):
        if usage is None:
            continue  # expired between SCAN and MEMORY USAGE
        kind = key_kind(key)
        bytes_by_kind[kind] += int(usage)
        keys_by_kind[kind] += 1
    return MemorySnapshot(bytes_by_kind, keys_by_kind)


def per_task(before: MemorySnapshot, after: MemorySnapshot, tasks: int) -> dict[str, float]:
    """Bytes per task for each kind of key that grew (or appeared) between the snapshots,
    largest first; kinds that shrank (a worker's own keys, say) or grew by less than half a
    byte per task (shared counters) are left out."""
    grown = {kind: (after.bytes_by_kind[kind] - before.bytes_by_kind[kind]) / tasks
             for kind in after.bytes_by_kind}
    return dict(sorted(((kind, value) for kind, value in grown.items() if value >= 0.5), key=lambda item: -item[1]))


def hash_field_bytes(connection: Redis, key: str) -> dict[str, int]:
    """Each field of a hash with the length of its value, to see which fields cost."""
    return {field.decode(): len(value) for field, value in connection.hgetall(key).items()}
