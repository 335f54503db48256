"""One task read from Redis in one call: its job hash, its latest result stream entry and,
for a started task, whether its worker is still alive.

Clients poll `GET /tasks/<id>` and `?wait` reads a task each time it is woken: this is the
API's hot path. A started task's view needs its worker's liveness (a task whose worker is
gone will never end by itself, so the read settles it: `TaskService._settle_if_abandoned`),
and the worker's name is only known from the hash, so a pipeline would need a second round
trip for it; one script reads the three together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rq.results import Result
from rq.worker import Worker

if TYPE_CHECKING:
    from redis import Redis

_SCRIPT = """
local raw = redis.call('HGETALL', KEYS[1])
if #raw == 0 then return {raw, {}, -1} end
local results = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local status, worker
for i = 1, #raw, 2 do
  if raw[i] == 'status' then status = raw[i + 1] elseif raw[i] == 'worker_name' then worker = raw[i + 1] end
end
local alive = -1
if status == 'started' and worker and worker ~= '' then alive = redis.call('EXISTS', ARGV[1] .. worker) end
return {raw, results, alive}
"""
# KEYS: the job hash, its result stream. ARGV: the worker key prefix. Answers the hash as a
# flat list, the stream's latest entry as XREVRANGE gives it, and 1 or 0 for a started job's
# worker key (-1: not started, or no worker named).


@dataclass
class TaskRecord:
    """What one read found: the job hash ({} when the job is gone), the result stream's
    latest entry as redis-py parses XREVRANGE (`[(id, {field: value})]`), and for a started
    task whether its worker's key exists (None: the task is not started)."""

    raw: dict[bytes, bytes]
    results: list[tuple[bytes, dict[bytes, bytes]]]
    worker_alive: bool | None


class TaskReader:
    """The script registered once on a connection; `read` is one Redis call."""

    def __init__(self, connection: Redis) -> None:
        self._script = connection.register_script(_SCRIPT)

    def read(self, job_key: str, job_id: str) -> TaskRecord:
        raw, entries, alive = self._script(
            keys=[job_key, Result.get_key(job_id)], args=[Worker.redis_worker_namespace_prefix]
        )
        return TaskRecord(_pairs(raw), [(entry_id, _pairs(fields)) for entry_id, fields in entries],
                          None if alive == -1 else bool(alive))


def _pairs(flat: list[Any]) -> dict[Any, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))
