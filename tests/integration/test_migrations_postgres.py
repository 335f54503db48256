"""Migrations on a real PostgreSQL, reached through a `postgres://` URL as platforms give it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from sqlalchemy import inspect

from tests.support.migrations import downgrade, schema_differences, upgrade
from trustcard.database import make_engine

pytestmark = pytest.mark.integration

ADMIN_DSN = os.environ.get("TEST_POSTGRES_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
SERVER_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")


@pytest.fixture
def database_url() -> Iterator[str]:
    name = f"trustcard_migrations_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(ADMIN_DSN)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{SERVER_URL}/{name}"
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_migrations_round_trip_on_postgresql(database_url: str) -> None:
    engine = make_engine(database_url)
    assert engine.url.drivername == "postgresql+psycopg2"
    upgrade(database_url)
    assert "post_analyses" in inspect(engine).get_table_names()
    assert schema_differences(engine) == []
    downgrade(database_url)
    assert "post_analyses" not in inspect(engine).get_table_names()
    upgrade(database_url)  # and again, as a second deploy's release step would
    assert "alembic_version" in inspect(engine).get_table_names()
    engine.dispose()
