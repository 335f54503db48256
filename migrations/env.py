"""Alembic environment: the URL comes from the app's settings, the schema from its models.

This is the release step's entry point (`alembic upgrade head`), so a bad setting stops
it like the web and the worker: one sentence naming the setting, exit status 3, no
traceback.
"""

from __future__ import annotations

import sys

from alembic import context
from dotenv import load_dotenv
from sqlalchemy import pool

from trustcard.config import load_settings
from trustcard.database import make_engine
from trustcard.exceptions import ConfigError
from trustcard.models import Base

load_dotenv(override=False)
target_metadata = Base.metadata


def database_url() -> str:
    """An explicit `-x url=...` or `sqlalchemy.url` wins (tests use it), else DATABASE_URL."""
    return context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option(
        "sqlalchemy.url"
    ) or _settings_database_url()


def _settings_database_url() -> str:
    """DATABASE_URL from the settings, all of them checked, as the other processes do."""
    try:
        return load_settings().database_url
    except ConfigError as error:
        print(f"trustcard: configuration error: {error}", file=sys.stderr, flush=True)
        sys.exit(3)


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
