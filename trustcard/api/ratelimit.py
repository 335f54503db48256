"""A per-client limit on submissions: a token bucket counted atomically in Redis.

The bucket itself is `trustcard.token_bucket`. A client is its named API key, else its
address (`trustcard.api.auth`). A single task's submission takes its token in the same
script call as its enqueue (`trustcard.admission`, through the task service); analyses,
batches and retries take here, before the view, in a call of their own. When Redis is
down, or refuses writes, that take is not enforced: the submission answers 503 for that
reason anyway.

Answers carry the IETF `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset`
headers (the bucket's size, the tokens left, seconds until it is full again); a 429 also
carries `Retry-After`, the seconds until enough tokens are back.

"""

from __future__ import annotations

import logging

from flask import Response, current_app, g, request
from redis import Redis
from redis.exceptions import RedisError

from trustcard.api.auth import rate_limit_key
from trustcard.api.operations import Header
from trustcard.config import Settings
from trustcard.connections import REDIS_DOWN_ERRORS
from trustcard.exceptions import ValidationFailed
from trustcard.metrics.store import SUBMISSIONS_KEY
from trustcard.token_bucket import KEY_PREFIX, TAKE_FUNCTION, BucketState, refusal

log = logging.getLogger(__name__)

_COUNT = {"type": "integer", "minimum": 0}
RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": Header("How many submissions this client may make at once (the bucket's size).", _COUNT),
    "RateLimit-Remaining": Header("How many it may make now, before it is refused.", _COUNT),
    "RateLimit-Reset": Header("Seconds until the bucket is full again.", _COUNT),
}
"""What `BucketState.headers` sends, as the OpenAPI document declares it."""
SUBMIT_ENDPOINT = "tasks.submit"
"""A single task's submission: its take is in its admission's script (`trustcard.admission`)."""
_TAKE = TAKE_FUNCTION + """
local allowed, tokens = take(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1')
return {allowed, tostring(tokens)}
"""


class RateLimiter:
    """Takes tokens from clients' buckets with one script call (EVALSHA, loaded once)."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.settings = settings
        self._take = redis.register_script(_TAKE)

    def take(self, client_key: str, cost: int = 1, *, count_refusal: bool = False) -> BucketState | None:
        """Take `cost` tokens from the client's bucket; None when the limit is off or Redis fails.
        With `count_refusal`, a refusal is counted for /metrics in the same script call."""
        settings = self.settings
        if settings.rate_limit_per_minute <= 0:
            return None
        rate = settings.rate_limit_per_minute / 60
        burst = settings.rate_limit_burst
        try:
            keys = [KEY_PREFIX + client_key, SUBMISSIONS_KEY]
            allowed, remaining = self._take(keys=keys, args=[rate, burst, cost, int(count_refusal)])
        except (*REDIS_DOWN_ERRORS, RedisError) as error:
            # Down, out of memory or read-only (inside a script these come as a plain
            # ResponseError): the submission answers 503 for that reason anyway.
            log.warning("rate limit not enforced, Redis failed: %s", error)
            return None
        return BucketState(bool(allowed), burst, float(remaining), rate, cost)


def limit_submissions() -> None:
    """`before_request` hook for submissions: 429 with Retry-After past the client's limit.
    A single task's submission is left to its admission, which takes in its enqueue's call."""
    if request.method != "POST" or request.endpoint == SUBMIT_ENDPOINT:
        return
    limiter: RateLimiter = current_app.extensions["trustcard.ratelimiter"]
    state = limiter.take(rate_limit_key())
    if state is None:
        return
    g.rate_limit = state
    if not state.allowed:
        raise refusal(state, limiter.settings.rate_limit_per_minute)


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
        raise refusal(state, settings.rate_limit_per_minute)


def add_rate_limit_headers(response: Response) -> Response:
    """`after_request` hook: the bucket's state on every submission's answer, 429 included."""
    state: BucketState | None = g.get("rate_limit")
    if state is not None:
        response.headers.update(state.headers())
    return response
