"""The per-client token bucket, as Lua that runs inside Redis, and what one take found.

`RATE_LIMIT_BURST` is the bucket's size (what a client may submit at once) and
`RATE_LIMIT_PER_MINUTE` the steady rate it refills at. The take reads, refills and takes
with Redis' own clock, so every web process on every machine shares one count and no two
can both take the last token. Two scripts run it: the rate limit's own call
(`trustcard.api.ratelimit`, for analyses, batches and retries) and a single task's
admission, which takes and enqueues in the same call (`trustcard.admission`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trustcard.exceptions import RateLimited

KEY_PREFIX = "trustcard:ratelimit:"

TAKE_FUNCTION = """
local function take(bucket_key, counter_key, rate, burst, cost, count_refusal)
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
  local state = redis.call('HMGET', bucket_key, 'tokens', 'at')
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
  elseif count_refusal then
    redis.pcall('HINCRBY', counter_key, 'rate_limited', cost)  -- /metrics, per task; never fails the take
  end
  redis.call('HSET', bucket_key, 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('EXPIRE', bucket_key, math.ceil((burst - tokens) / rate) + 1)
  return allowed, tokens
end
"""
"""`take(...)`: 1 or 0, and the tokens left. Defined first in each script that takes."""


@dataclass(frozen=True)
class BucketState:
    """What one take from a client's bucket found."""

    allowed: bool
    limit: int
    remaining: float
    rate_per_second: float
    cost: int = 1

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


def refusal(state: BucketState, per_minute: int) -> RateLimited:
    """The 429 for an empty bucket: what a client may submit, and when to try again."""
    return RateLimited(
        f"Too many submissions: each client may submit {state.limit} at once and "
        f"{per_minute} a minute after that; try again in {state.retry_after_seconds} s.",
        retry_after_seconds=state.retry_after_seconds,
    )
