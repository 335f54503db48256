"""A single task admitted in one Redis call: the client's rate-limit take, the queue's
depth check (`MAX_QUEUE_DEPTH`) and the job's enqueue, in one script.

Why one call: each round trip costs the web more CPU than Redis spends on it (redis-py
packing and parsing, a pooled connection checked out and polled, gevent's socket layer:
about a quarter of a submission's web CPU each, profiled), and a submission used to make
two, the take and then the enqueue's MULTI/EXEC.

The enqueue's commands are still RQ's own: `Queue.enqueue_call` writes them into a
`CommandRecorder` that stands in for its pipeline, and they travel as the script's
arguments (binary-safe: the job's data is zlib-compressed). The script runs them only when
the take and the depth allow, so a refused submission writes nothing but its bucket and its
count for /metrics, and an accepted one is written whole: Redis runs a script atomically,
and a write it refuses (out of memory, a read-only replica) is its first, the bucket's.

The job's own keys travel in the arguments, not in KEYS: right for one Redis (alone or
behind Sentinel), which is what the service runs on; a Redis Cluster would need every key
declared and on one slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import ResponseError

from trustcard.command_recording import CommandRecorder
from trustcard.config import Settings
from trustcard.connections import as_refused_write
from trustcard.metrics.outcomes import SubmissionOutcome
from trustcard.metrics.store import SUBMISSIONS_KEY
from trustcard.task_events import watch_command
from trustcard.token_bucket import KEY_PREFIX, TAKE_FUNCTION, BucketState, refusal

ACCEPTED, RATE_LIMITED, QUEUE_FULL = 1, 0, 2
"""The script's verdicts."""

_ADMIT = TAKE_FUNCTION + """
local rate = tonumber(ARGV[1])
local tokens = -1
if rate > 0 then
  local allowed
  allowed, tokens = take(KEYS[1], KEYS[2], rate, tonumber(ARGV[2]), 1, true)
  if allowed == 0 then return {0, tostring(tokens)} end
end
local max_depth = tonumber(ARGV[3])
if max_depth > 0 and redis.call('LLEN', KEYS[3]) >= max_depth then return {2, tostring(tokens)} end
local i = 6
for _ = 1, tonumber(ARGV[5]) do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
redis.pcall('HINCRBY', KEYS[2], '""" + SubmissionOutcome.ACCEPTED.value + """', tonumber(ARGV[4]))  -- /metrics; never fails the enqueue
return {1, tostring(tokens)}
"""
# KEYS: the client's bucket, the submissions counter, the queue's list.
# ARGV: refill rate per second (0: no limit), bucket size, MAX_QUEUE_DEPTH (0: none),
# what the accepted count grows by, the number of commands, then each command as its
# number of words followed by the words.


def script_arguments(commands: list[tuple[Any, ...]]) -> list[Any]:
    """The commands flattened for the script: their number, then each one's length
    followed by its words."""
    flat: list[Any] = [len(commands)]
    for command in commands:
        flat.append(len(command))
        flat.extend(command)
    return flat


@dataclass
class Admission:
    """Who is submitting, for the take, and what the take found."""

    client_key: str
    """The client's bucket (`trustcard.api.auth.rate_limit_key`)."""
    watch: tuple[str, float] | None = None
    """(task id, seconds): the task's events published for that long, from before its
    enqueue (`Prefer: wait`: the submission waits on its end; `trustcard.task_events`)."""
    bucket: BucketState | None = None
    """Set by the admission, whether it admitted or refused (None while the limit is off):
    the answer's RateLimit-* headers."""


class Admitter:
    """Runs the admission script (EVALSHA, loaded once per process)."""

    def __init__(self, connection: Redis, settings: Settings) -> None:
        self.settings = settings
        self._admit = connection.register_script(_ADMIT)

    def admit(
        self, admission: Admission | None, queue_key: str, recorder: CommandRecorder, *, counted: bool
    ) -> int:
        """Take the client's token, check the queue's depth and run the recorder's
        commands, in one call: `ACCEPTED` or `QUEUE_FULL` (nothing enqueued, the
        token taken). Raises `RateLimited` (429, nothing enqueued), and redis-py's
        `OutOfMemoryError` / `ReadOnlyError` when Redis takes no writes."""
        settings = self.settings
        limited = admission is not None and settings.rate_limit_per_minute > 0
        rate = settings.rate_limit_per_minute / 60 if limited else 0
        bucket = KEY_PREFIX + admission.client_key if admission is not None else KEY_PREFIX
        commands = recorder.commands
        if admission is not None and admission.watch is not None:
            commands = [watch_command(*admission.watch), *commands]
        args = [rate, settings.rate_limit_burst, settings.max_queue_depth, int(counted), *script_arguments(commands)]
        try:
            verdict, tokens = self._admit(keys=[bucket, SUBMISSIONS_KEY, queue_key], args=args)
        except ResponseError as error:
            raise as_refused_write(error) from None
        verdict = int(verdict)
        if limited:
            assert admission is not None
            admission.bucket = BucketState(verdict != RATE_LIMITED, settings.rate_limit_burst, float(tokens), rate)
            if verdict == RATE_LIMITED:
                raise refusal(admission.bucket, settings.rate_limit_per_minute)
        return verdict
