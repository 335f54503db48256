"""Settings: defaults, validation in one sentence naming the variable, unknown names ignored."""

from __future__ import annotations

import pytest

from trustcard.config import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, load_settings
from trustcard.exceptions import ConfigError


def test_defaults_need_no_environment() -> None:
    settings = load_settings({})
    assert settings.redis_url == DEFAULT_REDIS_URL
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert (settings.job_timeout, settings.job_soft_timeout) == (300, 240)
    assert settings.api_key is None and settings.dashboard_password is None
    assert len(settings.secret_key) >= 32
    assert not settings.is_production


def test_unknown_variables_are_ignored() -> None:
    plain = load_settings({"SECRET_KEY": "k"})
    assert load_settings({"SECRET_KEY": "k", "CELERY_BROKER_URL": "amqp://x", "SOMETHING_ELSE": "?"}) == plain


def test_values_are_read() -> None:
    settings = load_settings(
        {
            "REDIS_URL": "redis://cache:6380/2",
            "DATABASE_URL": "postgres://u@db/trust",
            "JOB_TIMEOUT": "60",
            "JOB_SOFT_TIMEOUT": "50",
            "PORT": "5000",
            "API_KEY": "secret",
            "APP_ENV": "production",
            "SECRET_KEY": "s",
        }
    )
    assert settings.redis_url == "redis://cache:6380/2"
    assert settings.database_url == "postgres://u@db/trust"
    assert (settings.job_timeout, settings.job_soft_timeout, settings.port) == (60, 50, 5000)
    assert settings.api_key == "secret" and settings.is_production


def test_worker_recycling_settings_are_read() -> None:
    settings = load_settings({"WORKER_MAX_JOBS_PER_CHILD": "7", "WORKER_MAX_CHILD_MEMORY_MB": "0"})
    assert (settings.worker_max_jobs_per_child, settings.worker_max_child_memory_mb) == (7, 0)


def test_soft_limit_defaults_below_a_small_hard_limit() -> None:
    assert load_settings({"JOB_TIMEOUT": "100"}).job_soft_timeout == 100


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"JOB_TIMEOUT": "five"}, "JOB_TIMEOUT"),
        ({"JOB_TIMEOUT": "0"}, "JOB_TIMEOUT"),
        ({"JOB_SOFT_TIMEOUT": "-3"}, "JOB_SOFT_TIMEOUT"),
        ({"JOB_TIMEOUT": "10", "JOB_SOFT_TIMEOUT": "20"}, "JOB_SOFT_TIMEOUT"),
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({"APP_ENV": "production"}, "SECRET_KEY"),
        ({"WEB_CONCURRENCY": "many"}, "WEB_CONCURRENCY"),
        ({"WORKER_MAX_JOBS_PER_CHILD": "0"}, "WORKER_MAX_JOBS_PER_CHILD"),
        ({"WORKER_MAX_CHILD_MEMORY_MB": "-1"}, "WORKER_MAX_CHILD_MEMORY_MB"),
    ],
)
def test_bad_setting_names_the_variable_in_one_sentence(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(env)
    message = str(raised.value)
    assert message.startswith(named)
    assert "\n" not in message and message.endswith(".")
