"""Every environment variable of the service, each declared once: name, kind, default, meaning.

`Settings` has one field per setting the application reads, named like its variable in
lower case; the field's default is its kind's, and its metadata holds the kind and the
meaning. `PROCESS_VARIABLES` are the variables that are not settings: read by
gunicorn.conf.py, by scripts/run, by the `trustcard` command, or checked once at start-up.
`.env.example` and the README's settings tables are generated from both
(`python -m trustcard.config --write`), and a unit test keeps them equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, cast

from trustcard.config.api_keys import ApiClient, ApiKeyList
from trustcard.config.kinds import Choice, Flag, Kind, Number, OptionalText, RedisURL, Text
from trustcard.sentinel_url import SENTINEL_SCHEMES

T = TypeVar("T")

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_DATABASE_URL = "sqlite:///trustcard.db"
DEFAULT_RATE_LIMIT_PER_MINUTE = 3_000
"""A steady 50 submissions a second per client: the old service had no limit at all."""
DEFAULT_RATE_LIMIT_BURST = 2_000
"""A client may submit this many at once before the steady rate applies."""
DEFAULT_SOFT_TIMEOUT = 240
"""The soft limit when `JOB_SOFT_TIMEOUT` is unset, or `JOB_TIMEOUT` when that is lower."""
ENVIRONMENTS = ("development", "production")
SSL_CERT_REQS = ("required", "optional", "none")
LOG_FORMATS = ("text", "json")
_DAY = 86_400
_YEAR = 31_536_000

SERVICE = "the service (trustcard/config)"
WEB_SERVER = "the web server (gunicorn.conf.py)"
RUN_SCRIPT = "scripts/run only"
COMMAND_LINE = "the trustcard command line"
SECTIONS = (SERVICE, WEB_SERVER, RUN_SCRIPT, COMMAND_LINE)
"""Who reads a variable, in the order the documents list them."""


@dataclass(frozen=True)
class Variable:
    """One environment variable as the documents show it."""

    name: str
    kind: Kind[Any]
    meaning: str
    """Markdown; `.env.example` shows it without the marks."""
    section: str = SERVICE
    default_words: str | None = None
    """The README's default when it is not the kind's plain value."""
    example: str | None = None
    """The value `.env.example` gives when it is not the default (empty has a meaning of its own)."""


def setting(kind: Kind[T], meaning: str, *, default_words: str | None = None, example: str | None = None) -> T:
    """A `Settings` field: the kind's default, with the kind and meaning in its metadata."""
    declared = {"kind": kind, "meaning": meaning, "default_words": default_words, "example": example}
    return cast(T, field(default=kind.default, metadata=declared))


@dataclass(frozen=True)
class Settings:
    """Every setting the service reads; field names are the variables' in lower case.

    Fields are read in this order, so the first bad one is the one reported.
    """

    app_env: str = setting(
        Choice("development", ENVIRONMENTS),
        "`production` refuses to start without `SECRET_KEY` or with `FLASK_DEBUG` on",
    )
    redis_url: str = setting(
        RedisURL(
            DEFAULT_REDIS_URL,
            ("redis://", "rediss://", "unix://", *SENTINEL_SCHEMES),
            "must start with redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel://",
        ),
        "queues, jobs, progress, results; `rediss://` is Redis over TLS, and the URL's own `?ssl_cert_reqs=` wins "
        "over `REDIS_SSL_CERT_REQS`. `redis+sentinel://host:port,host:port/<service>/<db>` (`rediss+sentinel://`: "
        "TLS to the master) follows the master through Redis Sentinel. Empty in `.env.example`: `scripts/run` then "
        "uses `EMBEDDED_REDIS_PORT`",
        example="",
    )
    redis_ssl_cert_reqs: str = setting(
        Choice("required", SSL_CERT_REQS),
        "with `rediss://` or `rediss+sentinel://`: `required` checks Redis' certificate, `optional` checks it when "
        "offered, `none` does not check (Heroku Redis' certificates are self-signed: set `none` there)",
    )
    redis_ssl_ca_certs: str | None = setting(
        OptionalText(),
        "with `rediss://` or `rediss+sentinel://`: PEM file of the CA that signed Redis' certificate (verification "
        "stays on); unset: the system's CAs",
    )
    redis_min_replicas_ack: int = setting(
        Number(0, 0, 10),
        "a submission is answered 202 only once this many Redis replicas hold it (`WAIT`, up to 0.5 s), else 503 "
        "`not_replicated`; so a failover loses no accepted task. `0`: answered once the master has it",
    )
    database_url: str = setting(
        Text(
            DEFAULT_DATABASE_URL,
            ("sqlite:", "postgres://", "postgresql://", "postgresql+"),
            "must be a sqlite:/// or postgresql:// URL",
        ),
        "SQLAlchemy URL; `postgres://` and `postgresql://` are rewritten to the psycopg2 driver",
    )
    secret_key: str = setting(
        Text(""),
        "Flask's secret; required when `APP_ENV=production`",
        default_words="random per process in development",
    )
    job_timeout: int = setting(
        Number(300, 1, _DAY),
        "hard time limit of a job, seconds: its process is killed and the task fails as timed out",
    )
    job_soft_timeout: int = setting(
        Number(DEFAULT_SOFT_TIMEOUT, 1, _DAY),
        "soft time limit, seconds: the job gets an exception it can catch to clean up, then fails",
        default_words="`240` (at most `JOB_TIMEOUT`)",
    )
    result_ttl: int = setting(
        Number(_DAY, 1, _YEAR),
        "seconds completed tasks and their results are kept; also the `Idempotency-Key` lifetime",
    )
    failure_ttl: int = setting(Number(7 * _DAY, 1, _YEAR), "seconds failed tasks are kept")
    api_key: str | None = setting(
        OptionalText(),
        "when set, every `/tasks` endpoint needs `Authorization: Bearer <key>`. **Unset (and no `API_KEYS`), the "
        "task API is open to anyone who can reach it.** `/health`, `/openapi.json`, `/docs` stay open",
    )
    api_keys: tuple[ApiClient, ...] = setting(
        ApiKeyList(),
        "named keys, one per client: `mobile:<key>,partner-bot:<key>` (a key of 16 characters or more), or "
        "`name:sha256:<hex>` (the key's SHA-256) so the config holds no key. A named client is its own identity in "
        "the rate limit, the logs and the task (`submitted_by`); `API_KEY` still works beside them",
    )
    trusted_proxy_hops: int = setting(
        Number(0, 0, 10),
        "reverse proxies in front of the web (`1` behind Heroku's router): the client's address and scheme come from "
        "that many `X-Forwarded-For` / `X-Forwarded-Proto` hops; with `0` those headers change nothing",
    )
    dashboard_username: str = setting(Text("admin"), "Basic-auth login name of the dashboard at `/rq`")
    dashboard_password: str | None = setting(
        OptionalText(), "Basic-auth password of the dashboard at `/rq`; while it is unset `/rq` is not served at all"
    )
    max_request_bytes: int = setting(
        Number(1_048_576, 1_024, 104_857_600),
        "largest request body accepted, bytes; a larger one gets 413 before it is read",
    )
    worker_shutdown_grace: int = setting(
        Number(25, 0, 3_600),
        "seconds a worker gives its running job after SIGTERM before handing it back to the queue",
    )
    worker_max_jobs_per_child: int = setting(
        Number(1000, 1, 1_000_000),
        "jobs a worker's long-lived job process runs before a fresh one replaces it, so a slow leak that stays under "
        "`WORKER_MAX_CHILD_MEMORY_MB` is still cut off (each replacement costs about 25 ms of CPU)",
    )
    worker_max_child_memory_mb: int = setting(
        Number(1024, 0, 1_048_576),
        "peak memory of a job process, MB, past which it is replaced once its current job ends; `0` is off",
    )
    rate_limit_per_minute: int = setting(
        Number(DEFAULT_RATE_LIMIT_PER_MINUTE, 0, 60_000_000),
        "steady submissions per minute per client (named key, else address), a token bucket counted in Redis; 429 "
        "with `Retry-After` and `RateLimit-*` headers past it; `0` is off",
    )
    rate_limit_burst: int = setting(
        Number(DEFAULT_RATE_LIMIT_BURST, 1, 10_000_000),
        "submissions a client may make at once before the steady rate applies (the bucket's size)",
    )
    metrics_token: str | None = setting(
        OptionalText(), "when set, `GET /metrics` needs `Authorization: Bearer <token>`; unset, it is open"
    )
    log_format: str = setting(
        Choice("text", LOG_FORMATS),
        "`text`: human-readable lines; `json`: one JSON object per line (time, level, logger, message, task_id, "
        "request_id, client) from web and workers",
    )
    webhook_secret: str | None = setting(
        OptionalText(),
        "signs webhook deliveries (`TrustCard-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">`); "
        "while unset, a `Callback-URL` submission is refused with 422",
    )
    webhook_allow_private: bool = setting(
        Flag(False),
        "`1` lets a `Callback-URL` resolve to loopback, private, link-local or metadata addresses (tests, private "
        "networks); never on the public internet",
    )
    events_heartbeat_seconds: int = setting(
        Number(15, 1, 50),
        "seconds between the comment heartbeats of an open event stream (routers close a connection idle for 55 s)",
    )
    max_queue_depth: int = setting(
        Number(50_000, 0, 100_000_000),
        "waiting tasks a queue may hold; past it submissions get 503 `queue_full`; `0` is off",
    )

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def requires_api_key(self) -> bool:
        return bool(self.api_keys)


SETTINGS: tuple[Variable, ...] = tuple(
    Variable(name=declared.name.upper(), **declared.metadata) for declared in fields(Settings)
)
"""The settings as variables, in the order `Settings` declares them."""

PROCESS_VARIABLES: tuple[Variable, ...] = (
    Variable(
        "FLASK_DEBUG",
        Flag(False),
        "Flask's debug mode; start-up refuses any value but `0` (or false, no, off) when `APP_ENV=production`",
    ),
    Variable(
        "PORT",
        Number(8000, 0, 65_535),
        "port the web process binds (platforms set it); `0` lets the system pick a free one",
        WEB_SERVER,
    ),
    Variable("WEB_CONCURRENCY", Number(2, 1, 256), "gunicorn worker processes (platforms set it)", WEB_SERVER),
    Variable(
        "WEB_CONNECTIONS",
        Number(4000, 1, 1_000_000),
        "open connections (event streams, `?wait` long polls, ordinary requests) one gunicorn gevent process holds "
        "at once",
        WEB_SERVER,
    ),
    Variable(
        "WEB_KEEPALIVE_REQUESTS",
        Number(100, 0, 1_000_000),
        "requests one keep-alive connection serves before the web closes it (`Connection: close` on the last "
        "answer), so that clients holding a few connections open are dealt out across the web processes again as "
        "they reconnect, like nginx's `keepalive_requests`; `0`: no cap",
        WEB_SERVER,
    ),
    Variable(
        "WEB_THREADS",
        Number(4, 1, 1_024),
        "threads per gunicorn process, for gunicorn's gthread worker only: the Procfile's web runs the gevent worker",
        WEB_SERVER,
    ),
    Variable("WORKERS", Number(1, 1, None), "how many worker processes `scripts/run` starts", RUN_SCRIPT),
    Variable(
        "EMBEDDED_REDIS_PORT",
        Number(6379, 1, 65_535),
        "with `REDIS_URL` empty, `scripts/run` uses the Redis on 127.0.0.1 at this port, or starts an embedded one "
        "there when nothing answers",
        RUN_SCRIPT,
    ),
    Variable(
        "TRUSTCARD_URL",
        Text("http://127.0.0.1:8000"),
        "where the `trustcard` command finds the API (it also sends `API_KEY`)",
        COMMAND_LINE,
    ),
)
"""Variables that are not settings of the application, each with the program that reads it."""

VARIABLES: dict[str, Variable] = {variable.name: variable for variable in (*SETTINGS, *PROCESS_VARIABLES)}
