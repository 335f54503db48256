"""Alembic environment: the URL comes from the app's settings, the schema from its models."""

from __future__ import annotations

from alembic import context
from dotenv import load_dotenv
from sqlalchemy import pool

from trustcard.config import load_settings
from trustcard.database import make_engine
from trustcard.models import Base

load_dotenv(override=False)
target_metadata = Base.metadata


def database_url() -> str:
    """An explicit `-x url=...` or `sqlalchemy.url` wins (tests use it), else DATABASE_URL."""
    return context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option(
        "sqlalchemy.url"
    ) or load_settings().database_url


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
