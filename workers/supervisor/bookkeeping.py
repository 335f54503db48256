"""RQ's per-job Redis bookkeeping in one round trip instead of twenty.

Measured on `SimpleWorker` (rq 3.0, an `add` job, JSON serializer): 20 round trips and
57 Redis commands per job, and most of the job's time is redis-py packing commands and
parsing replies, not Redis. RQ heartbeats the worker three times per job (three
commands each, unpipelined), sets its state twice, heartbeats the job twice and writes
the whole job hash back on success.

Here RQ's own methods still produce every write (`Execution.create`,
`Job.prepare_for_execution`, `Result.create`, the registries, the worker counters), so
every RQ reader (the status API, `rq info`, rq-dashboard, `Job.latest_result`) sees what
RQ itself would write. They write into a `CommandBatch` instead of a pipeline, and one
script runs the batch in Redis, atomically like MULTI/EXEC, as a single command:

1. start: the execution, the started registry, the job marked started, the worker busy
   (sent before the job runs, its answer read after: no wait);
2. end + next: the result, the finished registry, the execution deleted, the worker's
   counters and idle state; then, in the same script, the next job taken off the queue
   (into the queue's intermediate list, as RQ does for one queue, here for any number:
   a job taken is never on no list, whatever dies or fails over before its start) with its hash, or
   "suspended" while `rq suspend` is in force. A job that has dependents is not ended
   here: the script answers "has dependents" without writing anything, and the job ends
   through RQ's own success transaction, which moves its dependents to ready (and keeps
   them deferred if the job was cancelled meanwhile) before the next job is taken.

The batches themselves are built in `batches`. Jobs with anything unusual (callbacks,
webhooks, repeats, rate limits, a `Retry` result, `result_ttl=0`, dependents) and every
failure end through RQ's own code: see `batches.plain_success`.
"""

from __future__ import annotations

import json
import logging
import select
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.suspension import WORKERS_SUSPENDED
from rq.utils import get_version

from trustcard.command_recording import CommandRecorder
from trustcard.connections import as_refused_write
from trustcard.task_events import BEST_EFFORT_LUA

if TYPE_CHECKING:
    from redis import Redis
    from redis.connection import Connection
    from rq.job import Job
    from rq.queue import Queue
    from rq.serializers import Serializer

log = logging.getLogger(__name__)

SUSPENDED = "suspended"
"""What `Bookkeeper.run` answers while `rq suspend` is in force."""
HAS_DEPENDENTS = "has dependents"
"""What `Bookkeeper.run` answers, having written nothing, when the ended job has dependents."""

_SCRIPT = BEST_EFFORT_LUA + """
local nq = tonumber(ARGV[1])
local done = false
local ran = {started = true, finished = true, failed = true, stopped = true}
local function rewrite(key, changes)
  local data = redis.call('HGETALL', key)
  if #data == 0 then return 0 end
  local fields = {}
  for i = 1, #data, 2 do
    if data[i + 1] ~= '' and changes[data[i]] == nil then
      fields[#fields + 1] = data[i]
      fields[#fields + 1] = data[i + 1]
    end
  end
  for name, value in pairs(changes) do
    if value ~= '' then
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
  end
  redis.call('DEL', key)
  return redis.call('HSET', key, unpack(fields))
end
if ARGV[5] ~= '' and redis.call('SCARD', ARGV[5]) > 0 then return {false, 0, 0} end
if ARGV[6] ~= '' then
  local state = redis.call('HMGET', ARGV[6], 'status', 'worker_name')
  if (state[1] ~= 'started' and state[1] ~= 'canceled') or state[2] ~= ARGV[7] then
    done = 'refused:' .. tostring(state[1] or 'gone')
  end
end
if ARGV[8 + nq] and not done then
  for _, command in ipairs(cjson.decode(ARGV[8 + nq])) do
    if command[1] == 'TRUSTCARD.REWRITE' then
      done = rewrite(command[2], command[3])
    else
      done = redis.call(unpack(command))
    end
  end
  if ARGV[9 + nq] then
    for _, command in ipairs(cjson.decode(ARGV[9 + nq])) do best_effort(command, 'trustcard: best-effort ') end
  end
end
if nq == 0 then return {done} end
if redis.call('EXISTS', ARGV[4]) == 1 then return {done, 1} end
for q = 8, 7 + nq do
  local key = ARGV[q]
  while true do
    local id
    if ARGV[2] == '1' then
      id = redis.call('LMOVE', key, key .. ':intermediate', 'LEFT', 'RIGHT')
    else
      id = redis.call('LPOP', key)
    end
    if not id then break end
    local data = redis.call('HGETALL', ARGV[3] .. id)
    local stale = #data == 0
    for n = 1, #data, 2 do
      if data[n] == 'status' and ran[data[n + 1]] then stale = true end
    end
    if not stale then return {done, key, id, data} end
    if ARGV[2] == '1' then redis.call('LREM', key .. ':intermediate', -1, id) end
  end
end
return {done}
"""
# ARGV: number of queues to take a job from (0: none), '1' to use RQ's intermediate list,
# the job key prefix, the suspension key, a dependents key ('' for none: when that set is
# not empty the script does nothing and answers so, and the job's success goes through
# RQ's own transaction, which releases its dependents), a guard's job key and worker name
# ('' for none: the batch runs only while that job reads `started` (or `canceled`: RQ records
# the end of a job cancelled while it ran) by that worker, else the script skips it and its
# first answer is "refused:<status>"; see `CommandBatch.guard`),
# the queue keys, then (optional) the batch as
# a JSON list of commands, and (optional) its best-effort commands (the counts for
# /metrics), run under pcall after it: one that fails cannot stop the batch or the
# script, nor change its answer. One argument instead of a hundred: redis-py packs a
# start's 64 words in 12.8 us, orjson and one word in 3. The job's hash comes back as
# HGETALL gives it, its forty words parsed by hiredis in 2.3 us (joined into one string in
# the script and split here, they took 7.3). The script answers the batch's last reply. A job id whose hash is gone is skipped, as RQ's
# `dequeue_any` does, and so is one whose job already started or ended (a copy put back by
# the taken-job check, `abandoned.put_back_taken`, while its first taker started it): a job put
# back runs once. Either is taken off the intermediate list again. `REWRITE` is the one command of ours in a batch: see `CommandBatch.rewrite_hash`.

REWRITE = "TRUSTCARD.REWRITE"

WAIT_MARGIN_SECONDS = 5.0
"""How much longer than its own timeout a blocking wait may take to answer before the
connection counts as lost."""

_RAN = {"started", "finished", "failed", "stopped"}
"""Statuses of a job that was started: an id of it still on a queue is a stale copy."""

_PUT_BACK = """
if redis.call('LREM', KEYS[1], -1, ARGV[1]) == 1 then redis.call('LPUSH', KEYS[2], ARGV[1]) return 1 end
return 0
"""
"""A taken job's id, from its queue's intermediate list back to the queue's front (only if
it was still there: of several putting it back, one does)."""


class CommandBatch(CommandRecorder):
    """RQ's commands for one job's start or end, with what the bookkeeping script adds."""

    def __init__(self) -> None:
        super().__init__()
        self.best_effort: list[tuple[Any, ...]] = []
        """Commands whose failure must not fail the batch: the counts for /metrics."""
        self.guard: tuple[str, str] | None = None
        """(job key, worker name): run the batch only while that job is `started` (or
        `canceled` while it ran, whose end RQ still records) by that worker. A job's end comes late when its worker lost Redis for longer than its
        heartbeat (a network cut): by then the job was settled as abandoned, or retried and
        run elsewhere, and a late "finished" must not overwrite that. A command that was
        written to a socket before the cut may also reach Redis minutes later, when the link
        returns (TCP retransmits it), so the check is in the script, next to the writes."""

    def rewrite_hash(self, key: str, changes: dict[str, str]) -> None:
        """Write the hash at `key` anew, in the script: its fields with `changes` applied, a
        field changed to "" removed, and every field whose value is "" left out (RQ writes
        several empty ones, which `Job.restore` reads as None anyway). Written anew, not
        changed in place, because Redis never turns a hash it once stored as a hash table
        back into its compact listpack (about a third of the size), whatever is removed."""
        self.commands.append((REWRITE, key, changes))

    def as_json(self) -> bytes:
        """The commands as JSON. Numbers stay numbers (Redis writes them back as text with
        17 significant digits); RQ's bookkeeping has no binary values and no booleans."""
        return as_json(self.commands)

    def script_args(self) -> list[bytes]:
        """The script's trailing arguments: the batch, then its best-effort commands if any."""
        if not self.best_effort:
            return [self.as_json()]
        return [self.as_json(), as_json(self.best_effort)]


def as_json(commands: list[tuple[Any, ...]]) -> bytes:
    """`commands` as JSON (UTF-8) for the script's `cjson.decode`. orjson writes a job's
    batches in a fifteenth of the time `json.dumps` takes with a `default` (measured: 1.7 us
    against 26 us for a dozen commands, two or three batches a job). It refuses text that is
    not valid UTF-8 (a lone surrogate, as in an exception's message about an undecodable
    file name); `json.dumps` escapes that, so such a batch goes through it. Dates and
    dataclasses go to `_bytes_as_text` as with `json.dumps`, which refuses them: RQ writes
    its dates as text itself, and anything else is a mistake to surface, not to guess at."""
    try:
        return orjson.dumps(commands, default=_bytes_as_text, option=_REFUSED_BY_JSON)
    except orjson.JSONEncodeError:
        return json.dumps(commands, default=_bytes_as_text).encode()


_REFUSED_BY_JSON = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _bytes_as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    raise TypeError(f"cannot send {type(value).__name__} {value!r} to Redis")


@dataclass
class Sent:
    """A batch sent whose answer has not been read yet."""

    connection: Connection
    args: list[Any]


@dataclass
class _Unblocking:
    """`CLIENT UNBLOCK`s sent on `connection` (from the pool), `count` answers not read yet."""

    connection: Connection
    count: int


@dataclass
class _PendingWaits:
    """The other waits of a `_wait_each` whose answers are not read yet: (index, queue key)
    each, and the unblocks that end them."""

    waits: list[tuple[int, str]]
    unblocking: _Unblocking | None


@dataclass
class Dequeued:
    """A job taken off a queue, with its stored hash (the cancel flag lives there too)."""

    job: Job
    queue: Queue
    raw: dict[bytes, bytes]


class Bookkeeper:
    """Runs batches and takes jobs off the worker's queues, one script call each time."""

    def __init__(
        self, connection: Redis, queues: list[Queue], job_class: type[Job], serializer: Serializer
    ) -> None:
        self.connection = connection
        self.job_class = job_class
        self.serializer = serializer
        self.queues_by_key = {queue.key: queue for queue in queues}
        # RQ keeps a popped job in an intermediate list only when a worker has one queue; we
        # keep it there with any number of queues, so that a job taken and never started (its
        # worker killed, or a failover that kept the pop and lost the start) leaves a trace
        # the taken-job check puts back (`abandoned.put_back_taken`).
        self.use_intermediate = get_version(connection) >= (6, 2, 0)
        self._waits: list[tuple[Connection, int]] = []
        """With several queues, one blocking connection per queue and its client id."""
        self._script = connection.register_script(_SCRIPT)
        self._waiting: Connection | None = None
        self._waiting_client = 0
        self._pending_waits: _PendingWaits | None = None
        self.refused: str | None = None
        """The status of the job whose batch the last `run` refused (its guard), else None."""

    def run(
        self, batch: CommandBatch | None, queues: list[Queue] | None, dependents_key: str = "",
        after: Sent | None = None,
    ) -> Dequeued | str | None:
        """Run `batch` (if any), then take the next job off `queues` (if given) without
        blocking. Returns the job, `SUSPENDED` or None; `HAS_DEPENDENTS` (nothing run,
        nothing taken) when the set at `dependents_key` is not empty. With `after` (a job's
        start, not received yet) it goes on that connection, behind it: one wait for both.
        When the batch's guard refused it, `refused` is the job's status then (else None); the
        take goes on."""
        self._settle_waits()
        keys = [queue.key for queue in queues] if queues else []
        guard = batch.guard if batch is not None and batch.guard else ("", "")
        args: list[Any] = [
            len(keys), "1" if self.use_intermediate else "0", self.job_class.redis_job_namespace_prefix,
            WORKERS_SUSPENDED, dependents_key, *guard, *keys,
        ]
        if batch is not None:
            args.extend(batch.script_args())
        try:
            answer = self._script(args=args) if after is None else self._run_after(after, args)
        except ResponseError as error:  # refused inside the script: as redis-py raises it outside
            raise as_refused_write(error) from None
        self.refused = _refused_status(answer[0]) if len(answer) != 3 else None
        if len(answer) == 1:
            return None
        if len(answer) == 2:
            return SUSPENDED
        if len(answer) == 3:
            return HAS_DEPENDENTS
        _, key, job_id, fields = answer
        return self._build(key, job_id, dict(zip(fields[::2], fields[1::2], strict=True)))

    def send(self, batch: CommandBatch) -> Sent:
        """Send `batch` to run now, without waiting for Redis to answer: the job runs
        meanwhile, and `receive` collects the answer after it. Redis runs the batch as
        soon as it reads it, before the job's own commands, which come later."""
        pool = self.connection.connection_pool
        connection = pool.get_connection()
        args = [0, "0", self.job_class.redis_job_namespace_prefix, WORKERS_SUSPENDED, "", "", "", *batch.script_args()]
        try:
            connection.send_command("EVALSHA", self._script.sha, 0, *args)
        except BaseException:
            pool.release(connection)
            raise
        try:
            self._settle_waits()  # while Redis starts the job, and before the job runs
        except (RedisError, OSError) as error:
            log.warning("could not read the answers of the other waits (%s); a job one of them took "
                        "is put back by the taken-job check", error)
        return Sent(connection, args)

    def receive(self, sent: Sent) -> None:
        """The answer to `send`; runs the batch again with its source when Redis had
        forgotten the script (a restart)."""
        pool = self.connection.connection_pool
        try:
            sent.connection.read_response()
        except NoScriptError:
            self._script(args=sent.args)
        except ResponseError as error:  # refused inside the script (out of memory, a replica)
            raise as_refused_write(error) from None
        except BaseException:
            sent.connection.disconnect()  # its answer may still be on the way: not reusable
            raise
        finally:
            pool.release(sent.connection)

    def _run_after(self, sent: Sent, args: list[Any]) -> Any:
        """The script with `args`, sent on `sent`'s connection: Redis runs the two in order."""
        connection = sent.connection
        missing = [False, False]
        answer: Any = None
        try:
            connection.send_command("EVALSHA", self._script.sha, 0, *args)
            for index in (0, 1):
                try:
                    answer = connection.read_response()
                except NoScriptError:  # a restarted Redis forgot the script: both fail alike
                    missing[index] = True
        except BaseException:
            connection.disconnect()  # an answer may still be on the way: not reusable
            raise
        finally:
            self.connection.connection_pool.release(connection)
        if missing[0]:
            self._script(args=sent.args)
        if missing[1]:
            answer = self._script(args=args)
        return answer

    def wait(self, queues: list[Queue], block_seconds: float) -> Dequeued | None:
        """Wait up to `block_seconds` for a job: BLMOVE into the queue's intermediate list, so
        that the job taken is never on no list. RQ uses BLPOP on several queues, which leaves
        no trace between the pop and the start; here each queue gets its own BLMOVE on its own
        connection, and the first job in wins (one that another queue also gave meanwhile
        goes back to its front). The first connection's client id is what `waiting_client`
        gives: a `CLIENT UNBLOCK` of it ends the wait at once, as a timeout (nothing lost)."""
        keys = [queue.key for queue in queues]
        if not self.use_intermediate:  # a Redis older than 6.2: RQ's BLPOP
            return self._wait_blpop(keys, block_seconds)
        if len(keys) == 1:
            connection = self._waiting_connection()
            try:
                connection.send_command("BLMOVE", keys[0], keys[0] + ":intermediate", "LEFT", "RIGHT", block_seconds)
                job_id = connection.read_response()
            except BaseException:
                self._drop_waiting_connection()
                raise
            return self._taken(keys[0], job_id)
        return self._wait_each(keys, block_seconds)

    def _wait_blpop(self, keys: list[str], block_seconds: float) -> Dequeued | None:
        connection = self._waiting_connection()
        try:
            connection.send_command("BLPOP", *keys, block_seconds)
            popped = connection.read_response()
        except BaseException:
            self._drop_waiting_connection()
            raise
        if popped is None:
            return None
        key, job_id = popped
        return self._taken(key, job_id, traced=False)

    def _wait_each(self, keys: list[str], block_seconds: float) -> Dequeued | None:
        """One BLMOVE per queue, each on its own connection. The first answer (a job, or the
        timeout, or the supervisor's unblock) ends the others' waits: each then answers nil,
        or a job it took meanwhile, which goes back to the front of its queue.

        A job's start must not wait for that: its hash is asked for on its own connection at
        once, the other waits are ended on another, and their answers are read once the start
        is sent (`send`), or by the next call here, whichever comes first (`_settle_waits`)."""
        self._settle_waits()
        waits = self._wait_connections(len(keys))
        try:
            for (connection, _), key in zip(waits, keys, strict=True):
                connection.send_command("BLMOVE", key, key + ":intermediate", "LEFT", "RIGHT", block_seconds)
            by_socket = {connection._sock: index for index, (connection, _) in enumerate(waits)}  # noqa: SLF001
            ready, _, _ = select.select(list(by_socket), [], [], block_seconds + WAIT_MARGIN_SECONDS)
            if not ready:
                raise RedisTimeoutError("no answer to a blocking wait")
            answered = sorted(by_socket[sock] for sock in ready)
            first, first_connection = answered[0], waits[answered[0]][0]
            job_id = first_connection.read_response()
            if job_id is not None:
                first_connection.send_command("HGETALL", self.job_class.key_for(_text(job_id)))
            rest = [index for index in range(len(waits)) if index != first]
            unblocking = self._unblock([index for index in rest if index not in answered])
            self._pending_waits = _PendingWaits([(index, keys[index]) for index in rest], unblocking)
            raw = first_connection.read_response() if job_id is not None else None
        except BaseException:
            self._drop_waiting_connection()
            raise
        found = self._build_taken(keys[first], job_id, raw) if job_id is not None else None
        if found is None:  # nothing to start: nothing to overlap with
            self._settle_waits()
        return found

    def _unblock(self, indexes: list[int]) -> _Unblocking | None:
        """`CLIENT UNBLOCK` of the waits at `indexes`, sent, not read (`_settle_waits` reads the
        answers); None when there are none, or one of them has no client id (a Redis without
        CLIENT ID: those waits end by their timeout)."""
        if not indexes or not all(self._waits[index][1] for index in indexes):
            return None
        connection = self.connection.connection_pool.get_connection()
        try:
            connection.send_packed_command(connection.pack_commands(
                [("CLIENT", "UNBLOCK", self._waits[index][1]) for index in indexes]
            ))
        except BaseException:
            self.connection.connection_pool.release(connection)
            raise
        return _Unblocking(connection, len(indexes))

    def _settle_waits(self) -> None:
        """Read what the other waits of the last `_wait_each` answered, and put back at the
        front of its queue any job one of them took meanwhile. Until this has run, such a job
        sits in its queue's intermediate list: if this process dies first, the taken-job check
        puts it back (`abandoned.put_back_taken`)."""
        pending, self._pending_waits = self._pending_waits, None
        if pending is None:
            return
        taken: list[tuple[str, bytes]] = []
        try:
            if pending.unblocking is not None:
                unblocking = pending.unblocking.connection
                try:
                    for _ in range(pending.unblocking.count):
                        unblocking.read_response()
                except BaseException:
                    unblocking.disconnect()  # answers may still be on the way: not reusable
                    raise
                finally:
                    self.connection.connection_pool.release(unblocking)
            for index, key in pending.waits:
                job_id = self._waits[index][0].read_response()
                if job_id is not None:
                    taken.append((key, job_id))
        except BaseException:
            self._drop_waiting_connection()
            raise
        for key, job_id in taken:
            self.connection.eval(_PUT_BACK, 2, key + ":intermediate", key, job_id)

    def _taken(self, key: bytes | str, job_id: bytes | str | None, traced: bool = True) -> Dequeued | None:
        """The job `wait` took, with its hash; None (and off the intermediate list again)
        when its hash is gone or it already started or ended, as the take script does."""
        if job_id is None:
            return None
        return self._build_taken(key, job_id, self.connection.hgetall(self.job_class.key_for(_text(job_id))), traced)

    def _build_taken(self, key: bytes | str, job_id: bytes | str, raw: dict[bytes, bytes] | None,
                     traced: bool = True) -> Dequeued | None:
        """`_taken` once the hash is read."""
        if not raw or raw.get(b"status", b"").decode() in _RAN:
            if traced:
                self.connection.lrem(_text(key) + ":intermediate", -1, _text(job_id))
            return None  # gone since it was queued (RQ skips it too), or a copy of one that ran
        return self._build(key, job_id, raw)

    def prepare_wait(self) -> int:
        """Make sure `wait` has its connection; returns its Redis client id (0: unknown)."""
        if self.use_intermediate and len(self.queues_by_key) > 1:
            self._wait_connections(len(self.queues_by_key))
            return self._waits[0][1]
        self._waiting_connection()
        return self._waiting_client

    def _wait_connections(self, count: int) -> list[tuple[Connection, int]]:
        while len(self._waits) < count:
            self._waits.append(self._new_waiting_connection())
        return self._waits[:count]

    def _new_waiting_connection(self) -> tuple[Connection, int]:
        connection = self.connection.connection_pool.make_connection()
        try:
            connection.send_command("CLIENT", "ID")
            client = int(connection.read_response())
        except ResponseError:
            client = 0  # a Redis without CLIENT ID: waits end by their timeout
        except BaseException:
            connection.disconnect()
            raise
        return connection, client

    def _waiting_connection(self) -> Connection:
        if self._waiting is None:
            self._waiting, self._waiting_client = self._new_waiting_connection()
        return self._waiting

    def _drop_waiting_connection(self) -> None:
        pending, self._pending_waits = self._pending_waits, None
        if pending is not None and pending.unblocking is not None:
            pending.unblocking.connection.disconnect()  # its answers are still on the way
            self.connection.connection_pool.release(pending.unblocking.connection)
        if self._waiting is not None:
            self._waiting.disconnect()
        self._waiting = None
        self._waiting_client = 0
        for connection, _ in self._waits:
            connection.disconnect()
        self._waits = []

    def _build(self, key: bytes | str, job_id: bytes | str, raw: dict[bytes, bytes]) -> Dequeued:
        key_text = key.decode() if isinstance(key, bytes) else key
        id_text = job_id.decode() if isinstance(job_id, bytes) else job_id
        job = self.job_class(id_text, connection=self.connection, serializer=self.serializer)
        job.restore(raw)
        return Dequeued(job, self.queues_by_key[key_text], raw)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _refused_status(first: Any) -> str | None:
    """The job status in the script's "refused:<status>" answer, None for any other answer."""
    if isinstance(first, bytes) and first.startswith(b"refused:"):
        return first[len(b"refused:"):].decode()
    return None
