"""A per-client limit on submissions: a token bucket counted atomically in Redis.

`RATE_LIMIT_BURST` is the bucket's size (what a client may submit at once) and
`RATE_LIMIT_PER_MINUTE` the steady rate it refills at. One script call per submission
reads, refills and takes from the bucket with Redis' own clock, so every web process on
every machine shares one count and no two can both take the last token. A client is its
named API key, else its address (`trustcard.api.auth`). When Redis is down, or refuses
writes, the limit is not enforced: the submission answers 503 for that reason anyway.

Answers carry the IETF `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset`
headers (the bucket's size, the tokens left, seconds until it is full again); a 429 also
carries `Retry-After`, the seconds until enough tokens are back.

The same script call also reads the depth of the queue a submission goes to, when
`MAX_QUEUE_DEPTH` is on: the task service's check then costs no round trip of its own.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from flask import Response, current_app, g, request
from redis import Redis
from redis.exceptions import RedisError

from trustcard.api.auth import rate_limit_key
from trustcard.api.operations import Header
from trustcard.catalogue import find_by_route
from trustcard.config import Settings
from trustcard.connections import REDIS_DOWN_ERRORS
from trustcard.exceptions import RateLimited, ValidationFailed
from trustcard.task_service import queue_key
from trustcard.metrics.store import SUBMISSIONS_KEY

log = logging.getLogger(__name__)

KEY_PREFIX = "trustcard:ratelimit:"
_COUNT = {"type": "integer", "minimum": 0}
RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": Header("How many submissions this client may make at once (the bucket's size).", _COUNT),
    "RateLimit-Remaining": Header("How many it may make now, before it is refused.", _COUNT),
    "RateLimit-Reset": Header("Seconds until the bucket is full again.", _COUNT),
}
"""What `BucketState.headers` sends, as the OpenAPI document declares it."""
SUBMIT_ENDPOINT = "tasks.submit"
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
elseif ARGV[4] == '1' then
  redis.pcall('HINCRBY', KEYS[2], 'rate_limited', cost)  -- /metrics, per task; never fails the take
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil((burst - tokens) / rate) + 1)
local depth = -1
if KEYS[3] then
  depth = redis.call('LLEN', KEYS[3])  -- the queue's depth, for MAX_QUEUE_DEPTH
end
return {allowed, tostring(tokens), depth}
"""


@dataclass(frozen=True)
class BucketState:
    """What one take from a client's bucket found."""

    allowed: bool
    limit: int
    remaining: float
    rate_per_second: float
    cost: int = 1
    queue_depth: int | None = None
    """The depth of the queue named to `take`, read in the same call (None when none was)."""

    @property
    def seconds_until_full(self) -> int:
        return math.ceil((self.limit - self.remaining) / self.rate_per_second)

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil((self.cost - self.remaining) / self.rate_per_second))

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(math.floor(self.remaining)),
            "RateLimit-Reset": str(self.seconds_until_full),
        }


class RateLimiter:
    """Takes tokens from clients' buckets with one script call (EVALSHA, loaded once)."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.settings = settings
        self._take = redis.register_script(_TAKE)

    def take(
        self, client_key: str, cost: int = 1, *, count_refusal: bool = False, queue_key: str | None = None
    ) -> BucketState | None:
        """Take `cost` tokens from the client's bucket; None when the limit is off or Redis fails.
        With `count_refusal`, a refusal is counted for /metrics in the same script call; with
        `queue_key`, that list's length is read in it too."""
        settings = self.settings
        if settings.rate_limit_per_minute <= 0:
            return None
        rate = settings.rate_limit_per_minute / 60
        burst = settings.rate_limit_burst
        try:
            keys = [KEY_PREFIX + client_key, SUBMISSIONS_KEY] + ([queue_key] if queue_key is not None else [])
            allowed, remaining, depth = self._take(keys=keys, args=[rate, burst, cost, int(count_refusal)])
        except (*REDIS_DOWN_ERRORS, RedisError) as error:
            # Down, out of memory or read-only (inside a script these come as a plain
            # ResponseError): the submission answers 503 for that reason anyway.
            log.warning("rate limit not enforced, Redis failed: %s", error)
            return None
        depth = int(depth) if queue_key is not None and int(depth) >= 0 else None
        return BucketState(bool(allowed), burst, float(remaining), rate, cost, depth)


def limit_submissions() -> None:
    """`before_request` hook for submissions: 429 with Retry-After past the client's limit."""
    if request.method != "POST":
        return
    limiter: RateLimiter = current_app.extensions["trustcard.ratelimiter"]
    is_submission = request.endpoint == SUBMIT_ENDPOINT
    queue_key = _submission_queue_key() if is_submission else None
    state = limiter.take(rate_limit_key(), count_refusal=is_submission, queue_key=queue_key)
    if state is None:
        return
    g.rate_limit = state
    g.queue_depth = state.queue_depth  # the task service's MAX_QUEUE_DEPTH check reads it
    if not state.allowed:
        g.submission_counted = is_submission
        raise _refusal(state, limiter.settings)


def limit_batch(tasks: int) -> None:
    """Take a batch's tasks from the client's bucket at once, or none: 429 with Retry-After
    (the time until that many tokens are back) when fewer are left. A batch larger than the
    bucket could never pass, so it is refused with 422 instead of a wait that never ends."""
    limiter: RateLimiter = current_app.extensions["trustcard.ratelimiter"]
    settings = limiter.settings
    if settings.rate_limit_per_minute > 0 and tasks > settings.rate_limit_burst:
        problem = (f"holds {tasks} tasks; a client may submit at most {settings.rate_limit_burst} at once "
                   "(RATE_LIMIT_BURST): send smaller batches")
        raise ValidationFailed(f"tasks {problem}.", problems=[{"parameter": "tasks", "problem": problem}])
    state = limiter.take(rate_limit_key(), tasks, count_refusal=True)
    if state is None:
        return
    g.rate_limit = state
    if not state.allowed:
        g.submission_counted = True  # per task, in the script
        raise _refusal(state, settings)


def _refusal(state: BucketState, settings: Settings) -> RateLimited:
    return RateLimited(
        f"Too many submissions: each client may submit {state.limit} at once and "
        f"{settings.rate_limit_per_minute} a minute after that; try again in {state.retry_after_seconds} s.",
        retry_after_seconds=state.retry_after_seconds,
    )


def _submission_queue_key() -> str | None:
    """The Redis list of the queue this submission goes to, when `MAX_QUEUE_DEPTH` is on
    and the route names a job type; else None (the route refuses an unknown type itself)."""
    if not current_app.config["TRUSTCARD_SETTINGS"].max_queue_depth:
        return None
    job_type = find_by_route((request.view_args or {}).get("job_route", ""))
    return None if job_type is None else queue_key(job_type.queue)


def add_rate_limit_headers(response: Response) -> Response:
    """`after_request` hook: the bucket's state on every submission's answer, 429 included."""
    state: BucketState | None = g.get("rate_limit")
    if state is not None:
        response.headers.update(state.headers())
    return response
