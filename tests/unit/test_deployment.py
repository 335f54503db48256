"""The ways the service is started agree with each other and with the code.

The Procfile is the one source of the process commands: compose.yaml must run the same
lines, scripts/run must read them from the Procfile, and the worker line must serve
every queue of the catalogue with our worker class and the JSON serializer. The
settings documented in .env.example must be exactly the ones the code reads, with the
code's defaults, and .env.example and the README's settings tables must be what the
declarations write. None of this needs a service or a Docker engine.
"""

from __future__ import annotations

import dataclasses
import os
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from trustcard.catalogue import QUEUE_NAMES
from trustcard.cli.main import DEFAULT_URL
from trustcard.config import PROCESS_VARIABLES, Settings, load_settings
from trustcard.config.documents import env_example as written_env_example
from trustcard.config.documents import markdown_tables, readme_tables

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ("scripts/run", "scripts/test", ".ci/run")
OTHER_VARIABLES = {
    "FLASK_DEBUG": "trustcard/config refuses it in production",
    "PORT": "gunicorn.conf.py",
    "WEB_CONCURRENCY": "gunicorn.conf.py",
    "WEB_THREADS": "gunicorn.conf.py",
    "WEB_CONNECTIONS": "gunicorn.conf.py",
    "WEB_KEEPALIVE_REQUESTS": "gunicorn.conf.py validates it; the worker class (trustcard.gunicorn_worker) applies it",
    "WORKERS": "scripts/run",
    "EMBEDDED_REDIS_PORT": "scripts/run",
    "TRUSTCARD_URL": "the trustcard command line",
}


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name.strip(): command.strip() for name, _, command in (line.partition(":") for line in lines if line)}


def services() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]


def env_example() -> dict[str, str | None]:
    return dict(dotenv_values(ROOT / ".env.example"))


# --- Procfile -------------------------------------------------------------------------


def test_procfile_declares_release_web_and_worker() -> None:
    processes = procfile()
    assert set(processes) == {"release", "web", "worker"}
    assert processes["release"] == "alembic upgrade head"
    web = shlex.split(processes["web"])
    assert web[0] == "gunicorn" and web[-1] == "trustcard.wsgi:app"
    assert web[web.index("--config") + 1] == "gunicorn.conf.py"  # binds $PORT with $WEB_CONCURRENCY


def test_worker_line_serves_every_catalogued_queue_with_our_worker_and_json() -> None:
    words = shlex.split(procfile()["worker"])
    assert words[:2] == ["rq", "worker"]
    assert words[words.index("--worker-class") + 1] == "workers.supervisor.JobProcessSupervisor"
    assert words[words.index("--serializer") + 1] == "rq.serializers.JSONSerializer"
    assert words[words.index("--config") + 1] == "workers.settings"
    assert "--with-scheduler" in words  # delayed retries need it
    # each queue in turn: a flood on one cannot hold the others back (README, "Queues and workers")
    assert words[words.index("--dequeue-strategy") + 1] == "round_robin"
    options_with_values = {"--worker-class", "--serializer", "--config", "--dequeue-strategy"}
    queues = [
        word
        for previous, word in zip(words[1:], words[2:])
        if not word.startswith("-") and previous not in options_with_values
    ]
    assert queues == list(QUEUE_NAMES)


def test_gunicorn_config_reads_port_and_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "5123")
    monkeypatch.setenv("WEB_CONCURRENCY", "7")
    monkeypatch.setenv("WEB_THREADS", "3")
    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert config["bind"].endswith(":5123")
    assert (config["workers"], config["threads"]) == (7, 3)


# --- compose.yaml ---------------------------------------------------------------------


def test_compose_runs_the_procfile_commands() -> None:
    compose = services()
    for name, command in procfile().items():
        assert compose[name]["command"] == command, name


def test_compose_worker_scales() -> None:
    worker = services()["worker"]
    assert "ports" not in worker and "container_name" not in worker


def test_compose_redis_persists_and_never_evicts() -> None:
    redis = services()["redis"]
    assert redis["image"].startswith("redis:7")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_compose_postgres_keeps_its_data_and_reports_health() -> None:
    postgres = services()["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert "postgres-data:/var/lib/postgresql/data" in postgres["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_compose_app_services_wait_for_healthy_parts_and_point_at_them() -> None:
    compose = services()
    assert "/health" in " ".join(compose["web"]["healthcheck"]["test"])
    for name in ("web", "worker"):
        service = compose[name]
        assert service["depends_on"]["release"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("release", "web", "worker"):
        service = compose[name]
        assert service["env_file"] == [{"path": ".env", "required": False}], name
        settings = load_settings(service["environment"])
        assert settings.redis_url.startswith("redis://redis:"), name
        assert "@postgres:" in settings.database_url and settings.database_url.startswith("postgresql://"), name


def test_dockerfile_runs_as_a_non_root_user_on_python_311() -> None:
    lines = [line.split() for line in (ROOT / "Dockerfile").read_text().splitlines() if line.strip()]
    instructions = [(words[0], words[1:]) for words in lines if not words[0].startswith("#")]
    assert ("FROM", ["python:3.11-slim"]) in instructions
    assert any(name == "RUN" and "requirements.txt" in args for name, args in instructions)
    users = [args[0] for name, args in instructions if name == "USER"]
    assert users and users[-1] not in ("root", "0")


# --- .env.example ---------------------------------------------------------------------


def test_env_example_names_every_setting_and_nothing_unknown() -> None:
    documented = set(env_example())
    settings = {field.name.upper() for field in dataclasses.fields(Settings)}
    assert settings <= documented, f"not in .env.example: {sorted(settings - documented)}"
    assert documented - settings == set(OTHER_VARIABLES), "unknown in .env.example"


def test_readme_settings_table_names_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [field.name.upper() for field in dataclasses.fields(Settings) if f"`{field.name.upper()}`" not in readme]
    assert not missing, f"not in the README's settings table: {missing}"


def test_env_example_values_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {name: value or "" for name, value in env_example().items()}
    from_example = load_settings(values)
    defaults = Settings()
    for field in dataclasses.fields(Settings):
        if field.name != "secret_key":  # development makes a random one
            assert getattr(from_example, field.name) == getattr(defaults, field.name), field.name
    for name in ("PORT", "WEB_CONCURRENCY", "WEB_THREADS"):
        monkeypatch.delenv(name, raising=False)
    gunicorn = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    assert gunicorn["bind"].endswith(f":{values['PORT']}")
    assert (gunicorn["workers"], gunicorn["threads"]) == (int(values["WEB_CONCURRENCY"]), int(values["WEB_THREADS"]))


def test_the_variables_that_are_not_settings_are_declared_beside_them() -> None:
    assert {variable.name for variable in PROCESS_VARIABLES} == set(OTHER_VARIABLES)
    assert env_example()["TRUSTCARD_URL"] == DEFAULT_URL  # the command line's own default


def test_env_example_is_what_the_declarations_write() -> None:
    committed = (ROOT / ".env.example").read_text()
    assert committed == written_env_example(), "run `python -m trustcard.config --write` and commit .env.example"


def test_readme_settings_tables_are_what_the_declarations_write() -> None:
    committed = readme_tables((ROOT / "README.md").read_text())
    assert committed == markdown_tables(), "run `python -m trustcard.config --write` and commit README.md"


def test_a_bad_port_stops_gunicorns_config_with_one_sentence_and_status_3() -> None:
    env = {**os.environ, "PORT": "http"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "gunicorn.conf.py")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 3
    assert done.stderr == "trustcard: configuration error: PORT must be a whole number, got 'http'.\n"


# --- scripts --------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_is_executable_bash_without_syntax_errors(script: str) -> None:
    path = ROOT / script
    assert os.access(path, os.X_OK), f"{script} is not executable"
    assert path.read_text().startswith("#!/usr/bin/env bash\n")
    checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr


def test_ci_runs_the_readme_test_command_and_fails_when_nothing_ran() -> None:
    ci = (ROOT / ".ci/run").read_text()
    assert re.search(r"^scripts/test\b", ci, flags=re.MULTILINE)
    assert re.search(r"^\s*5\)", ci, flags=re.MULTILINE)  # pytest's "no tests collected" is a failure
    assert "scripts/test" in (ROOT / "README.md").read_text()


def test_run_script_takes_its_commands_from_the_procfile() -> None:
    run = (ROOT / "scripts/run").read_text()
    for name in ("release", "web", "worker"):
        assert f"procfile_line {name}" in run
    for command in procfile().values():
        assert command not in run, "scripts/run repeats a Procfile command instead of reading it"


def test_the_redis_client_parses_replies_with_hiredis() -> None:
    """requirements.txt pins hiredis for the web process's and workers' CPU; redis-py
    falls back to its pure-Python parser, silently, when hiredis is not importable."""
    import redis.utils

    assert redis.utils.HIREDIS_AVAILABLE
