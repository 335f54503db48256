"""The Procfile, compose.yaml, .env.example and the catalogue agree with each other."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from pathlib import Path

import yaml

from trustcard.catalogue import QUEUE_NAMES
from trustcard.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name.strip(): command.strip() for name, _, command in (line.partition(":") for line in lines if line)}


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_procfile_declares_release_web_and_worker() -> None:
    processes = procfile()
    assert set(processes) == {"release", "web", "worker"}
    assert processes["release"] == "alembic upgrade head"
    assert shlex.split(processes["web"])[0] == "gunicorn" and "trustcard.wsgi:app" in processes["web"]


def test_worker_line_serves_every_catalogued_queue_with_our_worker_and_json() -> None:
    words = shlex.split(procfile()["worker"])
    assert words[:2] == ["rq", "worker"]
    assert words[words.index("--worker-class") + 1] == "workers.worker.TrustCardWorker"
    assert words[words.index("--serializer") + 1] == "rq.serializers.JSONSerializer"
    assert words[words.index("--config") + 1] == "workers.settings"
    assert "--with-scheduler" in words  # delayed retries need it
    assert tuple(word for word in words[2:] if not word.startswith("-") and "." not in word) == QUEUE_NAMES


def test_compose_runs_the_procfile_commands() -> None:
    services = compose()["services"]
    for name in ("release", "web", "worker"):
        assert services[name]["command"] == procfile()[name], name


def test_compose_worker_scales_and_redis_persists() -> None:
    services = compose()["services"]
    assert "ports" not in services["worker"] and "container_name" not in services["worker"]
    redis_command = services["redis"]["command"]
    assert redis_command[redis_command.index("--appendonly") + 1] == "yes"
    assert redis_command[redis_command.index("--maxmemory-policy") + 1] == "noeviction"
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["release"]["condition"] == "service_completed_successfully"
        assert services[name]["env_file"] == [{"path": ".env", "required": False}]


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z_]+)=", text, flags=re.MULTILINE))
    settings = {field.name.upper() for field in dataclasses.fields(Settings)}
    others = {"WEB_THREADS", "EMBEDDED_REDIS_PORT", "FLASK_DEBUG"}
    assert documented == settings | others


def test_scripts_are_executable_and_ci_calls_the_test_command() -> None:
    for script in ("scripts/run", "scripts/test", ".ci/run"):
        assert os.access(ROOT / script, os.X_OK), script
    assert "scripts/test" in (ROOT / ".ci/run").read_text()
    assert "scripts/test" in (ROOT / "README.md").read_text()
