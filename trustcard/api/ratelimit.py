"""A per-client limit on submissions: a fixed one-minute window counted in Redis.

Counted in Redis so every web process and machine shares one count. A client is its
bearer token when it sends one, else its address. When Redis is down the limit is
not enforced (nor when it refuses writes): submissions answer 503 for that reason anyway.
"""

from __future__ import annotations

import hashlib
import logging
import time

from flask import current_app, request
from redis import Redis

from trustcard.connections import REDIS_DOWN_ERRORS, REDIS_REFUSING_WRITES
from trustcard.exceptions import RateLimited

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
KEY_PREFIX = "trustcard:ratelimit:"


def client_identity() -> str:
    token = request.headers.get("Authorization", "")
    if token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    return "addr:" + (request.remote_addr or "unknown")


def limit_submissions() -> None:
    """`before_request` hook for submissions: 429 with Retry-After past the limit."""
    if request.method != "POST":
        return
    limit: int = current_app.config["TRUSTCARD_SETTINGS"].rate_limit_per_minute
    if limit <= 0:
        return
    redis: Redis = current_app.extensions["trustcard.redis"]
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    key = f"{KEY_PREFIX}{client_identity()}:{window}"
    try:
        with redis.pipeline(transaction=False) as pipeline:
            pipeline.incr(key)
            pipeline.expire(key, WINDOW_SECONDS + 1)
            count, _ = pipeline.execute()
    except (*REDIS_DOWN_ERRORS, *REDIS_REFUSING_WRITES):
        return  # the submission itself answers 503 for the same reason
    if count > limit:
        retry_after = max(1, int((window + 1) * WINDOW_SECONDS - now) + 1)
        raise RateLimited(
            f"Too many submissions: the limit is {limit} a minute per client.", retry_after_seconds=retry_after
        )
