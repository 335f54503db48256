"""Redis connections with timeouts that keep the API answering when Redis does not.

redis-py's defaults retry with back-off for several seconds and wait forever on a
socket; a web request must instead fail within a couple of seconds so the API can
answer 503. Workers block on the queue for long stretches and get their own socket
timeout from RQ.
"""

from __future__ import annotations

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

REDIS_DOWN_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
"""What redis-py raises when the server is unreachable or stops answering."""

REDIS_REFUSING_WRITES = (OutOfMemoryError, ReadOnlyError)
"""What redis-py raises when Redis answers but takes no new data: `maxmemory` reached
under `noeviction` (as production should run it), or a replica after a failover.
Reads still work; writes are refused whole (a refused MULTI/EXEC writes nothing)."""

WEB_CONNECT_TIMEOUT_SECONDS = 1.0
WEB_SOCKET_TIMEOUT_SECONDS = 1.0


def web_redis(url: str) -> Redis:
    """A client for the web process: one quick retry when a connection breaks (a pooled socket
    may be stale after a Redis restart), none when Redis stops answering, so a frozen Redis
    costs one socket timeout per request, not several."""
    return Redis.from_url(
        url,
        socket_connect_timeout=WEB_CONNECT_TIMEOUT_SECONDS,
        socket_timeout=WEB_SOCKET_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
        health_check_interval=15,
    )
