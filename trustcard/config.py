"""Settings read from the environment, validated once, passed down as one object.

Only entry points (wsgi, the worker's settings module, scripts, tests) load a `.env`
file; this module reads whatever mapping it is given, so tests pass their own.
Variables it does not know are ignored. A malformed value stops start-up with one
sentence that names the variable (`ConfigError`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from trustcard.exceptions import ConfigError

T = TypeVar("T")

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_DATABASE_URL = "sqlite:///trustcard.db"
ENVIRONMENTS = ("development", "production")


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
    dashboard_username: str = "admin"
    dashboard_password: str | None = None
    max_request_bytes: int = 1_048_576
    worker_shutdown_grace: int = 25
    worker_max_jobs_per_child: int = 50
    worker_max_child_memory_mb: int = 1024
    rate_limit_per_minute: int = 600
    max_queue_depth: int = 50_000
    app_env: str = "development"

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"


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


def _checked(name: str, value: T, check: Callable[[T], bool], problem: str) -> T:
    if not check(value):
        raise ConfigError(f"{name} {problem}, got {value!r}.")
    return value


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
        dashboard_username=_text(env, "DASHBOARD_USERNAME", "admin"),
        dashboard_password=_optional(env, "DASHBOARD_PASSWORD"),
        max_request_bytes=_number(env, "MAX_REQUEST_BYTES", 1_048_576, 1_024, 104_857_600),
        worker_shutdown_grace=_number(env, "WORKER_SHUTDOWN_GRACE", 25, 0, 3_600),
        worker_max_jobs_per_child=_number(env, "WORKER_MAX_JOBS_PER_CHILD", 50, 1, 1_000_000),
        worker_max_child_memory_mb=_number(env, "WORKER_MAX_CHILD_MEMORY_MB", 1024, 0, 1_048_576),
        rate_limit_per_minute=_number(env, "RATE_LIMIT_PER_MINUTE", 600, 0, 1_000_000),
        max_queue_depth=_number(env, "MAX_QUEUE_DEPTH", 50_000, 0, 100_000_000),
        app_env=app_env,
    )
