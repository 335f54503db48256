"""Alembic environment: the URL comes from the app's settings, the schema from its models.

This is the release step's entry point (`alembic upgrade head`), so a bad setting stops
it like the web and the worker: one sentence naming the setting, exit status 3, no
traceback.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from trustcard.config import load_settings_or_exit
from trustcard.database import make_engine
from trustcard.models import Base

target_metadata = Base.metadata


def database_url() -> str:
    """An explicit `-x url=...` or `sqlalchemy.url` wins (tests use it), else DATABASE_URL."""
    return context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option(
        "sqlalchemy.url"
    ) or load_settings_or_exit("trustcard").database_url  # all of them checked, as the web does


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
