"""Settings module for `rq worker --config workers.settings`.

RQ reads the UPPERCASE names below. Importing this module is the worker's entry
point, so it loads `.env`, validates the settings (a bad one stops the worker with
one sentence), and waits for Redis to answer: stock `rq worker` exits at once when
Redis is not up yet, and a platform may start the worker before Redis.

`REDIS_URL` carries the TLS settings in its query (`trustcard.connections`): `rq worker`
builds its client from the URL alone and ignores every other TLS setting. For a
`redis+sentinel://` URL it is None and `SENTINEL` holds the sentinels instead: RQ's CLI
reads `SENTINEL` only when `REDIS_URL` is None.
"""

from __future__ import annotations

import logging
import ssl
import time

from trustcard.catalogue import QUEUE_NAMES
from trustcard.config import Settings, load_settings_or_exit
from trustcard.connections import REDIS_DOWN_ERRORS, redis_client, worker_redis_url, worker_sentinel
from trustcard.logs import configure_logging, redacted_url

_settings = load_settings_or_exit("trustcard worker")
configure_logging(_settings)
REDIS_URL = worker_redis_url(_settings)
SENTINEL = worker_sentinel(_settings)
QUEUES = list(QUEUE_NAMES)
log = logging.getLogger(__name__)


def wait_for_redis(settings: Settings, pause_limit: float = 5.0) -> None:
    """Return once Redis answers PING, retrying with back-off. A refused TLS certificate
    will not fix itself, so it is named with the settings that fix it."""
    client = redis_client(settings, socket_connect_timeout=2, socket_timeout=2)
    where = redacted_url(settings.redis_url)
    pause = 0.5
    while True:
        try:
            client.ping()
            return
        except REDIS_DOWN_ERRORS as error:
            if _is_certificate_error(error):
                log.error(
                    "Redis at %s: its TLS certificate was refused (%s). For a self-signed certificate (Heroku "
                    "Redis) set REDIS_SSL_CERT_REQS=none, or give its CA in REDIS_SSL_CA_CERTS.", where, error,
                )
            else:
                log.warning("waiting for Redis at %s: %s", where, error)
            time.sleep(pause)
            pause = min(pause * 2, pause_limit)
        finally:
            client.close()


def _is_certificate_error(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


wait_for_redis(_settings)
