"""Settings read from the environment, validated once, passed down as one object.

Only entry points (wsgi, the worker's settings module, scripts, tests) load a `.env`
file; this module reads whatever mapping it is given, so tests pass their own.
Variables it does not know are ignored. A malformed value stops start-up with one
sentence that names the variable (`ConfigError`).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from trustcard.exceptions import ConfigError

T = TypeVar("T")

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_DATABASE_URL = "sqlite:///trustcard.db"
ENVIRONMENTS = ("development", "production")
SSL_CERT_REQS = ("required", "optional", "none")
LOG_FORMATS = ("text", "json")
DEFAULT_RATE_LIMIT_PER_MINUTE = 3_000
"""A steady 50 submissions a second per client: the old service had no limit at all."""
DEFAULT_RATE_LIMIT_BURST = 2_000
"""A client may submit this many at once before the steady rate applies."""
SINGLE_API_KEY_NAME = "api-key"
"""The client name under which the single `API_KEY` is known."""
_CLIENT_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SHA256_KEY = re.compile(r"^sha256:([0-9a-fA-F]{64})$")


@dataclass(frozen=True)
class ApiClient:
    """One client allowed in with its own key. Only the key's SHA-256 is kept, so that a
    platform's config may hold the hash instead of the key itself."""

    name: str
    key_sha256: str


@dataclass(frozen=True)
class Settings:
    """Every setting the service reads; names match the environment variables."""

    redis_url: str = DEFAULT_REDIS_URL
    database_url: str = DEFAULT_DATABASE_URL
    secret_key: str = ""
    port: int = 8000
    web_concurrency: int = 2
    job_timeout: int = 300
    job_soft_timeout: int = 240
    result_ttl: int = 86_400
    failure_ttl: int = 604_800
    api_key: str | None = None
    api_keys: tuple[ApiClient, ...] = field(default_factory=tuple)
    redis_ssl_cert_reqs: str = "required"
    redis_ssl_ca_certs: str | None = None
    trusted_proxy_hops: int = 0
    rate_limit_burst: int = DEFAULT_RATE_LIMIT_BURST
    metrics_token: str | None = None
    log_format: str = "text"
    webhook_secret: str | None = None
    webhook_allow_private: bool = False
    events_heartbeat_seconds: int = 15
    dashboard_username: str = "admin"
    dashboard_password: str | None = None
    max_request_bytes: int = 1_048_576
    worker_shutdown_grace: int = 25
    worker_max_jobs_per_child: int = 50
    worker_max_child_memory_mb: int = 1024
    rate_limit_per_minute: int = DEFAULT_RATE_LIMIT_PER_MINUTE
    max_queue_depth: int = 50_000
    app_env: str = "development"

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def requires_api_key(self) -> bool:
        return bool(self.api_keys)


def _text(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _optional(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _number(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}.") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value}.")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _text(env, name, default).lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}.")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0 (true or false), got {raw!r}.")


def _checked(name: str, value: T, check: Callable[[T], bool], problem: str) -> T:
    if not check(value):
        raise ConfigError(f"{name} {problem}, got {value!r}.")
    return value


def _api_clients(env: Mapping[str, str]) -> tuple[ApiClient, ...]:
    """`API_KEYS` (`name:key,name:sha256:<hex>,...`) plus the single `API_KEY`, as clients."""
    clients: list[ApiClient] = []
    raw = env.get("API_KEYS", "").strip()
    for position, entry in enumerate(filter(None, (part.strip() for part in raw.split(","))), start=1):
        name, separator, key = entry.partition(":")
        name, key = name.strip(), key.strip()
        if not separator or not key:
            raise ConfigError(f"API_KEYS entry {position} must look like name:key, got {name!r} with no key.")
        if not _CLIENT_NAME.match(name):
            raise ConfigError(
                f"API_KEYS entry {position}: the client name must be 1 to 64 of A-Z a-z 0-9 . _ -, got {name!r}."
            )
        hashed = _SHA256_KEY.match(key)
        if hashed:
            digest = hashed.group(1).lower()
        elif key.lower().startswith("sha256:"):
            raise ConfigError(f"API_KEYS entry {position} ({name}): a sha256: key must be 64 hex digits.")
        elif len(key) < 16:
            raise ConfigError(f"API_KEYS entry {position} ({name}): a key must be at least 16 characters.")
        else:
            digest = hashlib.sha256(key.encode()).hexdigest()
        clients.append(ApiClient(name, digest))
    single = _optional(env, "API_KEY")
    if single is not None:
        clients.append(ApiClient(SINGLE_API_KEY_NAME, hashlib.sha256(single.encode()).hexdigest()))
    names = [client.name for client in clients]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"API_KEYS names a client more than once: {', '.join(repeated)}.")
    digests = [client.key_sha256 for client in clients]
    if len(set(digests)) != len(digests):
        raise ConfigError("API_KEYS (with API_KEY) gives the same key to two clients; each client needs its own.")
    return tuple(clients)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build `Settings` from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    app_env = _choice(env, "APP_ENV", "development", ENVIRONMENTS)
    redis_url = _checked(
        "REDIS_URL",
        _text(env, "REDIS_URL", DEFAULT_REDIS_URL),
        lambda url: url.startswith(("redis://", "rediss://", "unix://")),
        "must start with redis://, rediss:// or unix://",
    )
    database_url = _checked(
        "DATABASE_URL",
        _text(env, "DATABASE_URL", DEFAULT_DATABASE_URL),
        lambda url: url.startswith(("sqlite:", "postgres://", "postgresql://", "postgresql+")),
        "must be a sqlite:/// or postgresql:// URL",
    )
    if app_env == "production" and _text(env, "FLASK_DEBUG", "0").lower() not in ("0", "false", "no", "off"):
        raise ConfigError("FLASK_DEBUG must be off when APP_ENV is production.")
    secret_key = _optional(env, "SECRET_KEY")
    if secret_key is None:
        if app_env == "production":
            raise ConfigError("SECRET_KEY must be set when APP_ENV is production.")
        secret_key = secrets.token_hex(32)
    job_timeout = _number(env, "JOB_TIMEOUT", 300, 1, 86_400)
    job_soft_timeout = _number(env, "JOB_SOFT_TIMEOUT", min(240, job_timeout), 1, 86_400)
    if job_soft_timeout > job_timeout:
        raise ConfigError(
            f"JOB_SOFT_TIMEOUT ({job_soft_timeout}) must not be greater than JOB_TIMEOUT ({job_timeout})."
        )
    return Settings(
        redis_url=redis_url,
        database_url=database_url,
        secret_key=secret_key,
        port=_number(env, "PORT", 8000, 1, 65_535),
        web_concurrency=_number(env, "WEB_CONCURRENCY", 2, 1, 256),
        job_timeout=job_timeout,
        job_soft_timeout=job_soft_timeout,
        result_ttl=_number(env, "RESULT_TTL", 86_400, 1, 31_536_000),
        failure_ttl=_number(env, "FAILURE_TTL", 604_800, 1, 31_536_000),
        api_key=_optional(env, "API_KEY"),
        api_keys=_api_clients(env),
        redis_ssl_cert_reqs=_choice(env, "REDIS_SSL_CERT_REQS", "required", SSL_CERT_REQS),
        redis_ssl_ca_certs=_optional(env, "REDIS_SSL_CA_CERTS"),
        trusted_proxy_hops=_number(env, "TRUSTED_PROXY_HOPS", 0, 0, 10),
        rate_limit_burst=_number(env, "RATE_LIMIT_BURST", DEFAULT_RATE_LIMIT_BURST, 1, 10_000_000),
        metrics_token=_optional(env, "METRICS_TOKEN"),
        log_format=_choice(env, "LOG_FORMAT", "text", LOG_FORMATS),
        webhook_secret=_optional(env, "WEBHOOK_SECRET"),
        webhook_allow_private=_flag(env, "WEBHOOK_ALLOW_PRIVATE", False),
        events_heartbeat_seconds=_number(env, "EVENTS_HEARTBEAT_SECONDS", 15, 1, 50),
        dashboard_username=_text(env, "DASHBOARD_USERNAME", "admin"),
        dashboard_password=_optional(env, "DASHBOARD_PASSWORD"),
        max_request_bytes=_number(env, "MAX_REQUEST_BYTES", 1_048_576, 1_024, 104_857_600),
        worker_shutdown_grace=_number(env, "WORKER_SHUTDOWN_GRACE", 25, 0, 3_600),
        worker_max_jobs_per_child=_number(env, "WORKER_MAX_JOBS_PER_CHILD", 50, 1, 1_000_000),
        worker_max_child_memory_mb=_number(env, "WORKER_MAX_CHILD_MEMORY_MB", 1024, 0, 1_048_576),
        rate_limit_per_minute=_number(
            env, "RATE_LIMIT_PER_MINUTE", DEFAULT_RATE_LIMIT_PER_MINUTE, 0, 60_000_000
        ),
        max_queue_depth=_number(env, "MAX_QUEUE_DEPTH", 50_000, 0, 100_000_000),
        app_env=app_env,
    )
