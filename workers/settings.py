"""Settings module for `rq worker --config workers.settings`.

RQ reads the UPPERCASE names below. Importing this module is the worker's entry
point, so it loads `.env`, validates the settings (a bad one stops the worker with
one sentence), and waits for Redis to answer: stock `rq worker` exits at once when
Redis is not up yet, and a platform may start the worker before Redis.
"""

from __future__ import annotations

import logging
import sys
import time

from dotenv import load_dotenv
from redis import Redis

from trustcard.catalogue import QUEUE_NAMES
from trustcard.config import load_settings
from trustcard.connections import REDIS_DOWN_ERRORS
from trustcard.exceptions import ConfigError

load_dotenv(override=False)

try:
    _settings = load_settings()
except ConfigError as error:
    print(f"trustcard worker: configuration error: {error}", file=sys.stderr, flush=True)
    sys.exit(3)

REDIS_URL = _settings.redis_url
QUEUES = list(QUEUE_NAMES)


def wait_for_redis(url: str, pause_limit: float = 5.0) -> None:
    """Return once Redis at `url` answers PING, retrying with back-off."""
    client = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    pause = 0.5
    while True:
        try:
            client.ping()
            return
        except REDIS_DOWN_ERRORS as error:
            logging.getLogger(__name__).warning("waiting for Redis at %s: %s", url, error)
            time.sleep(pause)
            pause = min(pause * 2, pause_limit)
        finally:
            client.close()


wait_for_redis(REDIS_URL)
