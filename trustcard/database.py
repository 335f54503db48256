"""The database layer: one SQLAlchemy engine per process, built from `DATABASE_URL`.

SQLAlchemy 2.1 maps `postgresql://` to psycopg 3, and platforms still hand out the
old `postgres://` scheme; this service ships psycopg2, so both are rewritten to
`postgresql+psycopg2://`.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)

POSTGRES_CONNECT_TIMEOUT_SECONDS = 2


def normalise_database_url(url: str) -> str:
    """Point PostgreSQL URLs at the psycopg2 driver this project installs."""
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme):]
    return url


def make_engine(url: str, **options: Any) -> Engine:
    """An engine that notices dropped connections and never waits long to connect."""
    url = normalise_database_url(url)
    if url.startswith("postgresql"):
        pool_options = {} if "poolclass" in options else {"pool_size": 5, "max_overflow": 5, "pool_timeout": 2}
        return create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS},
            **pool_options,
            **options,
        )
    return create_engine(url, pool_pre_ping=True, connect_args={"timeout": 2}, **options)


def ping_database(engine: Engine) -> str | None:
    """None when the database answers `SELECT 1`, else a one-line reason."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()
        log.warning("database check failed: %s", reason[0] if reason else error)
        return reason[0] if reason else type(error).__name__
    return None
