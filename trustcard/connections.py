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
- Failover: with a `redis+sentinel://` URL every client asks the sentinels where the master is
  (redis-py's `Sentinel.master_for`) and asks again when its connection breaks or the old
  master turns read-only, so web, workers, their scheduler and the dashboard follow a
  failover without a restart. `rq worker` cannot take such a URL: it gets `worker_sentinel`,
  the `SENTINEL` settings dict its CLI reads instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis import BlockingConnectionPool, Redis
from redis.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from trustcard.sentinel_url import SentinelURL, is_sentinel_url, parse_sentinel_url

if TYPE_CHECKING:
    from trustcard.config import Settings

REDIS_DOWN_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
"""What redis-py raises when the server is unreachable or stops answering (a refused TLS
handshake included: redis-py raises it as a ConnectionError)."""

REDIS_REFUSING_WRITES = (OutOfMemoryError, ReadOnlyError)
"""What redis-py raises when Redis answers but takes no new data: `maxmemory` reached
under `noeviction` (as production should run it), or a replica after a failover.
Reads still work; writes are refused whole (a refused MULTI/EXEC writes nothing)."""


REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, *REDIS_REFUSING_WRITES)
"""For a worker, Redis that does not answer and Redis that answers but takes no writes come to
the same: its bookkeeping cannot be written now, so it waits and tries again (a worker that
crashed on `maxmemory` instead would stop working until someone restarted it)."""


def as_refused_write(error: ResponseError) -> ResponseError:
    """A write refused inside a script comes back as a plain ResponseError with Redis' own
    text in it ("... -OOM command not allowed ..."): turned into the refusal redis-py raises
    outside one, so that callers handle one kind. Any other error is returned as it is."""
    text = str(error)
    if isinstance(error, REDIS_REFUSING_WRITES):
        return error
    if "OOM command not allowed" in text:
        return OutOfMemoryError(text)
    if "READONLY" in text:
        return ReadOnlyError(text)
    return error


WEB_CONNECT_TIMEOUT_SECONDS = 1.0
WEB_SOCKET_TIMEOUT_SECONDS = 1.0
WEB_POOL_CONNECTIONS = 100
"""Redis connections one web process may hold (redis-py's default pool size)."""
WEB_POOL_WAIT_SECONDS = 2.0
"""How long a request waits for a free pooled connection before it answers 503."""
TLS_SCHEME = "rediss://"
SENTINEL_TIMEOUT_SECONDS = 1.0
"""Connect and answer timeout towards each sentinel: a dead one is skipped for the next."""


def tls_options(settings: Settings) -> dict[str, str]:
    """The TLS options for `settings.redis_url` that its own query does not already set;
    none for a plain `redis://` or `redis+sentinel://` URL (redis-py refuses TLS options there)."""
    url = settings.redis_url
    if is_sentinel_url(url):
        parsed = parse_sentinel_url(url)
        if not parsed.tls:
            return {}
        given = {name: value for name, value in parsed.options if name.startswith("ssl_")}
    elif url.startswith(TLS_SCHEME):
        given = dict(parse_qsl(urlsplit(url).query))
    else:
        return {}
    options = {}
    if "ssl_cert_reqs" not in given:
        options["ssl_cert_reqs"] = settings.redis_ssl_cert_reqs
    if settings.redis_ssl_ca_certs and "ssl_ca_certs" not in given:
        options["ssl_ca_certs"] = settings.redis_ssl_ca_certs
    if is_sentinel_url(url):  # a plain URL's own query reaches redis-py by itself; a sentinel URL's does not
        options.update(given)
    return options


def redis_client(settings: Settings, **options: Any) -> Redis:
    """A client for `REDIS_URL` with the TLS settings applied; `options` go to redis-py."""
    if is_sentinel_url(settings.redis_url):
        return _master_for(settings, options)
    return Redis.from_url(settings.redis_url, **tls_options(settings), **options)


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's sentinel pool (connections go to the master the sentinels name), waiting
    for a free connection as `BlockingConnectionPool` does instead of refusing one."""


def _master_for(settings: Settings, options: dict[str, Any],
                pool_class: type[SentinelConnectionPool] = SentinelConnectionPool) -> Redis:
    parsed = parse_sentinel_url(settings.redis_url)
    sentinel = Sentinel(
        list(parsed.sentinels),
        sentinel_kwargs=sentinel_options(settings, parsed),
        **master_options(settings, parsed),
    )
    client: Redis = sentinel.master_for(parsed.service, connection_pool_class=pool_class, **options)
    return client


def master_options(settings: Settings, parsed: SentinelURL) -> dict[str, Any]:
    """How to talk to the master the sentinels name: its db, credentials and TLS."""
    options: dict[str, Any] = {"db": parsed.db, "username": parsed.username, "password": parsed.password}
    if parsed.tls:
        options.update(ssl=True, **tls_options(settings))
    return options


def sentinel_options(settings: Settings, parsed: SentinelURL) -> dict[str, Any]:
    """How to talk to the sentinels themselves: short timeouts, their own password, and the
    same TLS as the master under `rediss+sentinel://` (sentinels serve TLS on their port too)."""
    options: dict[str, Any] = {
        "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
        "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
    }
    if parsed.option("sentinel_password"):
        options["password"] = parsed.option("sentinel_password")
    if parsed.tls:
        options.update(ssl=True, **tls_options(settings))
    return options


def worker_redis_url(settings: Settings) -> str | None:
    """`REDIS_URL` with the TLS settings in its query, for `rq worker`, which makes its own
    client from a URL alone (and its scheduler makes another from that client's options).
    None for a sentinel URL: RQ's CLI then reads `worker_sentinel` instead."""
    if is_sentinel_url(settings.redis_url):
        return None
    extra = tls_options(settings)
    if not extra:
        return settings.redis_url
    parts = urlsplit(settings.redis_url)
    query = urlencode([*parse_qsl(parts.query), *extra.items()])
    return urlunsplit(parts._replace(query=query))


def worker_sentinel(settings: Settings) -> dict[str, Any] | None:
    """RQ's `SENTINEL` settings dict for a sentinel `REDIS_URL` (RQ's CLI builds the worker's
    client with `Sentinel(...).master_for(...)` from it); None for any other URL."""
    if not is_sentinel_url(settings.redis_url):
        return None
    parsed = parse_sentinel_url(settings.redis_url)
    master = master_options(settings, parsed)
    return {
        "INSTANCES": list(parsed.sentinels),
        "MASTER_NAME": parsed.service,
        "DB": master.pop("db"),
        "USERNAME": master.pop("username"),
        "PASSWORD": master.pop("password"),
        "SSL": master.pop("ssl", False),
        "CONNECTION_KWARGS": master,
        "SENTINEL_KWARGS": sentinel_options(settings, parsed),
    }


def web_redis(settings: Settings) -> Redis:
    """A client for the web process: one quick retry when a connection breaks (a pooled socket
    may be stale after a Redis restart), none when Redis stops answering, so a frozen Redis
    costs one socket timeout per request, not several.

    Its pool holds at most `WEB_POOL_CONNECTIONS`, and a request that finds them all busy
    waits up to `WEB_POOL_WAIT_SECONDS` for one: under gunicorn's gevent worker a thousand
    requests may be in flight at once, and redis-py's own pool refuses the 101st with "Too
    many connections" instead of waiting."""
    options: dict[str, Any] = {
        "socket_connect_timeout": WEB_CONNECT_TIMEOUT_SECONDS,
        "socket_timeout": WEB_SOCKET_TIMEOUT_SECONDS,
        "retry": Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,)),
        "health_check_interval": 15,
        "max_connections": WEB_POOL_CONNECTIONS,
        "timeout": WEB_POOL_WAIT_SECONDS,
    }
    if is_sentinel_url(settings.redis_url):
        return _master_for(settings, options, BlockingSentinelConnectionPool)
    pool = BlockingConnectionPool.from_url(settings.redis_url, **tls_options(settings), **options)
    client = Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # closing the client closes its pool, as from_url's does
    return client
