"""Every Redis client of the service is built here, from the settings, so none can forget TLS.

Two things stock clients get wrong for us:

- TLS: managed Redis plans (Heroku's among them) serve `rediss://` with self-signed
  certificates, which redis-py's default verification refuses. `REDIS_SSL_CERT_REQS` and
  `REDIS_SSL_CA_CERTS` are applied to every client, unless the URL's own query
  (`?ssl_cert_reqs=none`) says otherwise. `rq worker` builds its own client from a URL,
  so it gets `worker_redis_url`, the URL with those options written into its query.
- Time: redis-py's defaults retry with back-off for several seconds and wait forever on a
  socket; a web request must instead fail within a couple of seconds so the API can answer
  503. Workers block on the queue for long stretches and get their own socket timeout from RQ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

if TYPE_CHECKING:
    from trustcard.config import Settings

REDIS_DOWN_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
"""What redis-py raises when the server is unreachable or stops answering (a refused TLS
handshake included: redis-py raises it as a ConnectionError)."""

REDIS_REFUSING_WRITES = (OutOfMemoryError, ReadOnlyError)
"""What redis-py raises when Redis answers but takes no new data: `maxmemory` reached
under `noeviction` (as production should run it), or a replica after a failover.
Reads still work; writes are refused whole (a refused MULTI/EXEC writes nothing)."""

WEB_CONNECT_TIMEOUT_SECONDS = 1.0
WEB_SOCKET_TIMEOUT_SECONDS = 1.0
WEB_POOL_CONNECTIONS = 100
"""Redis connections one web process may hold (redis-py's default pool size)."""
WEB_POOL_WAIT_SECONDS = 2.0
"""How long a request waits for a free pooled connection before it answers 503."""
TLS_SCHEME = "rediss://"


def tls_options(settings: Settings) -> dict[str, str]:
    """The TLS options for `settings.redis_url` that its own query does not already set;
    none for a plain `redis://` URL (redis-py refuses TLS options there)."""
    url = settings.redis_url
    if not url.startswith(TLS_SCHEME):
        return {}
    given = {name for name, _ in parse_qsl(urlsplit(url).query)}
    options = {}
    if "ssl_cert_reqs" not in given:
        options["ssl_cert_reqs"] = settings.redis_ssl_cert_reqs
    if settings.redis_ssl_ca_certs and "ssl_ca_certs" not in given:
        options["ssl_ca_certs"] = settings.redis_ssl_ca_certs
    return options


def redis_client(settings: Settings, **options: Any) -> Redis:
    """A client for `REDIS_URL` with the TLS settings applied; `options` go to redis-py."""
    return Redis.from_url(settings.redis_url, **tls_options(settings), **options)


def worker_redis_url(settings: Settings) -> str:
    """`REDIS_URL` with the TLS settings in its query, for `rq worker`, which makes its own
    client from a URL alone (and its scheduler makes another from that client's options)."""
    extra = tls_options(settings)
    if not extra:
        return settings.redis_url
    parts = urlsplit(settings.redis_url)
    query = urlencode([*parse_qsl(parts.query), *extra.items()])
    return urlunsplit(parts._replace(query=query))


def web_redis(settings: Settings) -> Redis:
    """A client for the web process: one quick retry when a connection breaks (a pooled socket
    may be stale after a Redis restart), none when Redis stops answering, so a frozen Redis
    costs one socket timeout per request, not several.

    Its pool holds at most `WEB_POOL_CONNECTIONS`, and a request that finds them all busy
    waits up to `WEB_POOL_WAIT_SECONDS` for one: under gunicorn's gevent worker a thousand
    requests may be in flight at once, and redis-py's own pool refuses the 101st with "Too
    many connections" instead of waiting."""
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        **tls_options(settings),
        socket_connect_timeout=WEB_CONNECT_TIMEOUT_SECONDS,
        socket_timeout=WEB_SOCKET_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
        health_check_interval=15,
        max_connections=WEB_POOL_CONNECTIONS,
        timeout=WEB_POOL_WAIT_SECONDS,
    )
    client = Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # closing the client closes its pool, as from_url's does
    return client
