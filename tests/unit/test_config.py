"""Settings: defaults, validation in one sentence naming the variable, unknown names ignored,
and the one way every entry point stops on a bad one."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trustcard.config import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    PROCESS_VARIABLES,
    SETTINGS,
    Settings,
    Variable,
    load_settings,
    load_settings_or_exit,
    read_variables_or_exit,
)
from trustcard.config import loading
from trustcard.config.declarations import VARIABLES
from trustcard.exceptions import ConfigError

ROOT = Path(__file__).resolve().parents[2]


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
            "API_KEY": "secret",
            "APP_ENV": "production",
            "SECRET_KEY": "s",
        }
    )
    assert settings.redis_url == "redis://cache:6380/2"
    assert settings.database_url == "postgres://u@db/trust"
    assert (settings.job_timeout, settings.job_soft_timeout) == (60, 50)
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
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({"APP_ENV": "production"}, "SECRET_KEY"),
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


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PORT": "http"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"WEB_CONCURRENCY": "many"}, "WEB_CONCURRENCY"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"),
        ({"WEB_CONNECTIONS": "lots"}, "WEB_CONNECTIONS"),
        ({"WEB_THREADS": "-1"}, "WEB_THREADS"),
    ],
)
def test_a_bad_web_server_variable_stops_gunicorns_config_in_one_sentence(
    env: dict[str, str], named: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PORT and WEB_CONCURRENCY are not settings of the app (it never reads them): the web
    server's config reads them, and refuses a bad one as the app refuses a bad setting."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        read_variables_or_exit("trustcard", ("PORT", "WEB_CONCURRENCY", "WEB_CONNECTIONS", "WEB_THREADS"))
    assert stopped.value.code == 3
    line = capsys.readouterr().err
    assert line.startswith(f"trustcard: configuration error: {named} ") and line.endswith(".\n")
    assert line.count("\n") == 1


def test_port_and_web_concurrency_are_not_settings() -> None:
    names = {declared.name for declared in dataclasses.fields(Settings)}
    assert not names & {"port", "web_concurrency"}
    assert load_settings({"PORT": "http", "WEB_CONCURRENCY": "many"}) is not None  # the app ignores them


def test_the_web_server_variables_read_their_declared_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PORT", "WEB_CONCURRENCY", "WEB_CONNECTIONS", "WEB_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WEB_THREADS", " 9 ")
    values = read_variables_or_exit("trustcard", ("PORT", "WEB_CONCURRENCY", "WEB_CONNECTIONS", "WEB_THREADS"))
    assert values == {"PORT": 8000, "WEB_CONCURRENCY": 2, "WEB_CONNECTIONS": 4000, "WEB_THREADS": 9}


@pytest.fixture
def dotenv_loads(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Entry points load `.env` first; here a developer's own `.env` stays out of the test."""
    calls: list[bool] = []
    monkeypatch.setattr(loading, "load_dotenv", lambda override: calls.append(override))
    return calls


def test_load_settings_or_exit_prints_one_line_naming_the_program_then_exits_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, dotenv_loads: list[bool]
) -> None:
    monkeypatch.setenv("JOB_TIMEOUT", "soon")
    with pytest.raises(SystemExit) as stopped:
        load_settings_or_exit("trustcard worker")
    assert stopped.value.code == 3
    assert capsys.readouterr().err == (
        "trustcard worker: configuration error: JOB_TIMEOUT must be a whole number, got 'soon'.\n"
    )


def test_load_settings_or_exit_loads_dotenv_then_returns_the_settings_of_the_environment(
    monkeypatch: pytest.MonkeyPatch, dotenv_loads: list[bool]
) -> None:
    monkeypatch.setenv("JOB_TIMEOUT", "77")
    monkeypatch.setenv("JOB_SOFT_TIMEOUT", "")
    assert load_settings_or_exit("trustcard").job_soft_timeout == 77
    assert dotenv_loads == [False]  # the real environment wins over the file


@pytest.mark.parametrize(
    ("module", "program"),
    [("trustcard.wsgi", "trustcard"), ("workers.settings", "trustcard worker")],
)
def test_every_entry_point_stops_on_a_bad_setting_with_its_one_line(module: str, program: str) -> None:
    """The web's app module and the worker's settings module share `load_settings_or_exit`;
    the release step's is tested beside the Procfile's release line (test_release_step)."""
    env = {**os.environ, "JOB_TIMEOUT": "soon"}
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 3
    assert done.stderr == f"{program}: configuration error: JOB_TIMEOUT must be a whole number, got 'soon'.\n"


# --- the declarations themselves -----------------------------------------------------------


def test_each_variable_is_declared_once() -> None:
    names = [variable.name for variable in (*SETTINGS, *PROCESS_VARIABLES)]
    assert len(names) == len(set(names)) == len(VARIABLES)


@pytest.mark.parametrize("variable", [*SETTINGS, *PROCESS_VARIABLES], ids=lambda variable: variable.name)
def test_each_declared_default_is_what_its_example_value_reads_as(variable: Variable) -> None:
    example = variable.kind.example
    if example:
        assert variable.kind.read(variable.name, example) == variable.kind.default
    assert variable.meaning and "|" not in variable.meaning and "\n" not in variable.meaning
    assert not variable.meaning.endswith(".")  # the documents add the full stop


def test_a_declared_default_is_the_settings_default() -> None:
    defaults = Settings()
    for declared in dataclasses.fields(Settings):
        assert getattr(defaults, declared.name) == VARIABLES[declared.name.upper()].kind.default


def test_reading_settings_imports_nothing_that_imports_ssl() -> None:
    """gunicorn.conf.py reads its variables through trustcard.config in the master, before
    the gevent worker monkey-patches: an `ssl` imported there makes gevent warn on stderr
    at every boot (breaking LOG_FORMAT=json's one-JSON-object-per-line) and patch too late."""
    code = (
        "import sys, trustcard.config;"
        "loaded = [name for name in ('ssl', 'redis', 'rq', 'pydantic', 'gevent') if name in sys.modules];"
        "print(','.join(loaded))"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "", f"trustcard.config loaded {ran.stdout.strip()}"
