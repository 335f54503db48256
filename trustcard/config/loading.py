"""Settings read from the environment, validated once, passed down as one object.

`load_settings` reads whatever mapping it is given, so tests pass their own; variables it
does not know are ignored, and an empty value means the default. A malformed value raises
`ConfigError`, one sentence that names the variable. Entry points (the web, the worker's
settings module, the release step) call `load_settings_or_exit`, which also loads `.env`
and turns that error into the one line they print before they stop.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any, NoReturn

from dotenv import load_dotenv

from trustcard.config.api_keys import with_single_key
from trustcard.config.declarations import DEFAULT_SOFT_TIMEOUT, VARIABLES, Settings
from trustcard.config.kinds import is_off
from trustcard.config.errors import ConfigError

EXIT_CONFIG_ERROR = 3
"""Exit status of a process stopped by a bad setting; gunicorn's master reads 3 as "the
worker cannot boot" and stops instead of restarting it in a loop."""


def _raw(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def read_variable(env: Mapping[str, str], name: str) -> Any:
    """One declared variable's value from `env`: its default when unset or empty."""
    raw = _raw(env, name)
    kind = VARIABLES[name].kind
    return kind.read(name, raw) if raw else kind.default


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build `Settings` from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    values = {declared.name: read_variable(env, declared.name.upper()) for declared in fields(Settings)}
    production = values["app_env"] == "production"
    if production and not is_off(_raw(env, "FLASK_DEBUG")):
        raise ConfigError("FLASK_DEBUG must be off when APP_ENV is production.")
    if not values["secret_key"]:
        if production:
            raise ConfigError("SECRET_KEY must be set when APP_ENV is production.")
        values["secret_key"] = secrets.token_hex(32)
    hard = values["job_timeout"]
    if not _raw(env, "JOB_SOFT_TIMEOUT"):
        values["job_soft_timeout"] = min(DEFAULT_SOFT_TIMEOUT, hard)
    soft = values["job_soft_timeout"]
    if soft > hard:
        raise ConfigError(f"JOB_SOFT_TIMEOUT ({soft}) must not be greater than JOB_TIMEOUT ({hard}).")
    values["api_keys"] = with_single_key(values["api_keys"], values["api_key"])
    return Settings(**values)


def exit_with(program: str, error: ConfigError) -> NoReturn:
    """Print `program: configuration error: <sentence>` and stop with status 3."""
    print(f"{program}: configuration error: {error}", file=sys.stderr, flush=True)
    sys.exit(EXIT_CONFIG_ERROR)


def load_settings_or_exit(program: str) -> Settings:
    """The settings of an entry point: `.env` loaded first (the real environment wins), a
    bad setting printed as one line prefixed with `program`, then exit status 3."""
    load_dotenv(override=False)
    try:
        return load_settings()
    except ConfigError as error:
        exit_with(program, error)


def read_variables_or_exit(program: str, names: Iterable[str]) -> dict[str, Any]:
    """Declared variables from the process environment, for a program that reads a few of
    them itself (gunicorn.conf.py); a bad one stops it the way a bad setting does."""
    try:
        return {name: read_variable(os.environ, name) for name in names}
    except ConfigError as error:
        exit_with(program, error)
