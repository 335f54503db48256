"""Many stored tasks, quickly, written by the service's own code (scripts/scale.py, tests).

One template task at a time goes through the real code paths with its Redis commands
recorded instead of sent: the API's enqueue (the commands `trustcard.task_submission.stage`
gives the admission script, and the accepted count the script adds), then the
worker's own bookkeeping for its start (`workers.supervisor.batches.start_batch`) and its
end, a success (`success_batch`, what our worker writes after a plain job) or a failure
(RQ's failure path as our worker class runs it, `rq_seams.finalize_failure`). Each stored
task is the template's commands with the template's id replaced by its own, sent in large
pipelines. So whatever the code writes per task is what gets stored, and a leaner job
hash or result store is followed without a change here; nothing here writes a job hash by
hand. A new template is recorded every `TEMPLATE_EVERY` tasks, so times move on.

The one command written here is the dequeue (an LPOP of the task's queue: what the worker's
dequeue script does), because the worker's dequeue is a script that reads as it writes.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.client import Pipeline
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.utils import now

from trustcard import rq_seams
from trustcard.catalogue import BY_NAME
from trustcard.config import Settings
from trustcard.metrics.outcomes import SubmissionOutcome
from trustcard.metrics.store import SUBMISSIONS_KEY
from trustcard.task_events import PUBLISH_IF_WATCHED
from trustcard.task_submission import stage
from workers.supervisor import JobProcessSupervisor
from workers.supervisor.batches import start_batch, success_batch
from workers.supervisor.bookkeeping import REWRITE

TEMPLATE_EVERY = 5_000
"""Tasks stored per recorded template."""
CHUNK_TASKS = 500
"""Tasks stored per script call: big enough that round trips do not count, short enough
(tens of milliseconds) that Redis keeps answering others in between."""
FILL_WORKER_PREFIX = "scale-fill-"
FILL_TYPE = "test.add"
FILL_PARAMS = {"x": 7, "y": 8}
FAILURE_MESSAGE = "stored by the scale fill: the task raised"

_READS = frozenset({
    "GET", "HGET", "HGETALL", "HMGET", "HEXISTS", "EXISTS", "TYPE", "TTL", "PTTL", "SMEMBERS", "SISMEMBER",
    "SCARD", "LLEN", "LRANGE", "LPOS", "ZCARD", "ZSCORE", "ZRANGE", "ZRANGEBYSCORE", "XRANGE", "XREVRANGE",
    "XLEN", "INFO", "PING", "CLIENT", "TIME",
})
"""Commands the recorded code may send that only read: they go to Redis (where the template,
never stored, reads as absent); every other command is recorded, scripts included (today the
code reads only the server's version and its own client's address while recording)."""

Command = tuple[Any, ...]


class _RecordingPipeline(Pipeline):
    """A pipeline whose `execute` records its commands instead of sending them."""

    recorded: list[Command]

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        commands = [args for args, _options in self.command_stack]
        self.recorded.extend(commands)
        self.reset()
        return [None] * len(commands)


class RecordingRedis(Redis):
    """A client on the real Redis that records every write, direct or pipelined."""

    def __init__(self, real: Redis) -> None:
        super().__init__(connection_pool=real.connection_pool)
        self.recorded: list[Command] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if str(args[0]).split()[0].upper() in _READS:
            return super().execute_command(*args, **options)
        self.recorded.append(args)
        return 0

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        pipeline = _RecordingPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)
        pipeline.recorded = self.recorded
        return pipeline


@contextmanager
def _quiet() -> Iterator[None]:
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


def _raised() -> tuple[Any, Any, Any]:
    try:
        raise RuntimeError(FAILURE_MESSAGE)
    except RuntimeError:
        return sys.exc_info()


def record_task(connection: Redis, settings: Settings, failed: bool, worker_name: str) -> tuple[str, list[Command]]:
    """One template task's id and every command the service writes for it, from its
    submission to its end (a success, or with `failed` a failure) by the worker `worker_name`."""
    job_type = BY_NAME[FILL_TYPE]
    recorder = RecordingRedis(connection)
    queue = Queue(job_type.queue, connection=recorder, serializer=JSONSerializer)
    worker = JobProcessSupervisor([queue], connection=recorder, serializer=JSONSerializer, name=worker_name)
    job_id = str(uuid.uuid4())
    with recorder.pipeline() as pipeline:  # what the admission script runs for an accepted task
        job, _ = stage(pipeline, queue, job_type, dict(FILL_PARAMS), job_id, settings,
                       submitted_by="127.0.0.1", request_id=uuid.uuid4().hex, callback_url=None)
        pipeline.hincrby(SUBMISSIONS_KEY, SubmissionOutcome.ACCEPTED.value, 1)
        pipeline.execute()
    recorder.recorded.append(("LPOP", queue.key))  # the worker's dequeue
    batch, execution = start_batch(worker, job, worker.get_heartbeat_ttl(job), None)
    recorder.recorded.extend(batch.commands)
    if failed:
        with _quiet():  # the worker logs each failure with its traceback: once per template is noise
            rq_seams.finalize_failure(worker, job, queue, execution, _raised())
    else:
        result_ttl = job.get_result_ttl(worker.default_result_ttl)
        ended = success_batch(worker, job, execution, FILL_PARAMS["x"] + FILL_PARAMS["y"], result_ttl, now())
        recorder.recorded.extend(ended.commands)
        recorder.recorded.extend(ended.best_effort)
    return job_id, _rewrites_expanded(recorder.recorded)


def _rewrites_expanded(commands: list[Command]) -> list[Command]:
    """The commands with each of the bookkeeping script's own `REWRITE` (a job hash written
    anew, `CommandBatch.rewrite_hash`) turned into the DEL and HSET it makes of the hash the
    commands before it wrote: the template's hash is never stored, so the replay cannot read it.
    The end's `PUBLISH_IF_WATCHED` goes: nobody watches a stored task."""
    hashes: dict[str, dict[str, Any]] = {}
    expanded: list[Command] = []
    for command in commands:
        name = str(command[0]).upper()
        if name == PUBLISH_IF_WATCHED:
            continue  # a stored task is watched by nobody: its end's announcement publishes nothing
        if name == REWRITE:
            key, changes = str(command[1]), command[2]
            fields = {**hashes.get(key, {}), **changes}
            kept = {field: value for field, value in fields.items() if value not in ("", b"")}
            hashes[key] = kept
            expanded.append(("DEL", key))
            expanded.append(("HSET", key, *(part for item in kept.items() for part in item)))
            continue
        if name in {"HSET", "HMSET"}:
            fields = hashes.setdefault(str(command[1]), {})
            for field, value in zip(command[2::2], command[3::2]):
                fields[field.decode() if isinstance(field, bytes) else str(field)] = value
        elif name == "HDEL":
            for field in command[2:]:
                hashes.get(str(command[1]), {}).pop(field.decode() if isinstance(field, bytes) else str(field), None)
        elif name == "DEL":
            for key in command[1:]:
                hashes.pop(str(key), None)
        expanded.append(command)
    return expanded


_REPLAY = """
local n = tonumber(ARGV[1])
local pos = n + 2
local commands = {}
for c = 1, tonumber(ARGV[pos]) do
  pos = pos + 1
  local command = {}
  for a = 1, tonumber(ARGV[pos]) do
    pos = pos + 1
    local parts = {}
    for p = 1, tonumber(ARGV[pos]) do
      pos = pos + 1
      parts[p] = ARGV[pos]
    end
    command[a] = parts
  end
  commands[c] = command
end
for i = 2, n + 1 do
  local id = ARGV[i]
  for c = 1, #commands do
    local args = {}
    for a, parts in ipairs(commands[c]) do
      if #parts == 1 then args[a] = parts[1] else args[a] = table.concat(parts, id) end
    end
    redis.call(unpack(args))
  end
end
return n
"""
# ARGV: the number of task ids, the ids, then the template: its number of commands, and for
# each command its number of arguments, and for each argument its number of parts and the
# parts (the argument split where the template's id was). Binary-safe (the job's data is
# compressed bytes), and one script call stores hundreds of tasks: the client only sends ids.

_SCRIPTED = frozenset({b"EVAL", b"EVALSHA"})
"""Commands a script may not call: sent per task through a pipeline instead."""


@dataclass
class Template:
    """A recorded task's commands, split where its id appears, ready for the replay script."""

    task_id: str
    flat: list[bytes]
    """The template part of the replay script's arguments."""
    scripted: list[Command]
    """The commands a script may not call (the /metrics counts' own scripts)."""

    @classmethod
    def recorded(cls, connection: Redis, settings: Settings, failed: bool, worker_name: str) -> Template:
        task_id, commands = record_task(connection, settings, failed, worker_name)
        encode = connection.get_encoder().encode
        marker = task_id.encode()
        flat: list[bytes] = []
        replayed = 0
        scripted = []
        for command in commands:
            encoded = [encode(arg) for arg in command]
            if encoded[0].upper() in _SCRIPTED:
                scripted.append(tuple(encoded))
                continue
            replayed += 1
            flat.append(str(len(encoded)).encode())
            for arg in encoded:
                parts = arg.split(marker)
                flat.append(str(len(parts)).encode())
                flat.extend(parts)
        return cls(task_id, [str(replayed).encode(), *flat], scripted)

    def scripted_for(self, task_id: str) -> Iterator[Command]:
        old, new = self.task_id.encode(), task_id.encode()
        for command in self.scripted:
            yield tuple(arg.replace(old, new) for arg in command)


@dataclass
class Filled:
    """What a fill stored: the ids of the first and last tasks of each kind."""

    finished: list[str]
    failed: list[str]


def fill(connection: Redis, settings: Settings, finished: int, failed: int,
         progress: Callable[[int, int], None] | None = None) -> Filled:
    """Store `finished` completed and `failed` failed tasks; returns a few of their ids
    (the first two and the last two of each kind)."""
    replay = connection.register_script(_REPLAY)
    worker_name = f"{FILL_WORKER_PREFIX}{uuid.uuid4().hex}"
    kept = Filled([], [])
    total, done = finished + failed, 0
    for count, is_failure, ids in ((finished, False, kept.finished), (failed, True, kept.failed)):
        template: Template | None = None
        chunk: list[str] = []
        for index in range(count):
            if index % TEMPLATE_EVERY == 0:
                _send(replay, template, chunk, connection)
                chunk = []
                template = Template.recorded(connection, settings, is_failure, worker_name)
            task_id = str(uuid.uuid4())
            chunk.append(task_id)
            if index < 2 or index >= count - 2:
                ids.append(task_id)
            if len(chunk) == CHUNK_TASKS:
                _send(replay, template, chunk, connection)
                done, chunk = done + len(chunk), []
                if progress is not None:
                    progress(done, total)
        _send(replay, template, chunk, connection)
        done += len(chunk)
    # The recorded worker never registered (no birth, no heartbeat): its counters go too.
    connection.delete(JobProcessSupervisor.redis_worker_namespace_prefix + worker_name)
    if progress is not None:
        progress(done, total)
    return kept


def _send(replay: Any, template: Template | None, ids: list[str], connection: Redis) -> None:
    """Store the tasks `ids` as copies of `template`: one script call, and a pipeline for
    the commands a script may not call."""
    if template is None or not ids:
        return
    replay(args=[len(ids), *ids, *template.flat])
    if template.scripted:
        with connection.pipeline(transaction=False) as pipeline:
            for task_id in ids:
                for command in template.scripted_for(task_id):
                    pipeline.execute_command(*command)
            for reply in pipeline.execute(raise_on_error=False):
                if isinstance(reply, Exception):
                    raise RuntimeError(f"the fill's Redis command failed: {reply}")
