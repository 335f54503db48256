"""Migrations on SQLite: they build exactly the models' schema, and undo it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.orm import Session

from tests.support.migrations import downgrade, schema_differences, upgrade
from trustcard.database import make_engine
from trustcard.models import PostAnalysis
from workers import storage


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'migrated.db'}"


def test_upgrade_builds_the_models_schema_and_downgrade_removes_it(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(database_url)
    assert "post_analyses" in inspect(engine).get_table_names()
    assert schema_differences(engine) == []
    downgrade(database_url)
    assert "post_analyses" not in inspect(engine).get_table_names()
    engine.dispose()


def test_jobs_store_analyses_in_the_migrated_database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    upgrade(database_url)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setattr(storage, "_engine", None)
    storage.save_post_analysis("task-1", "https://www.instagram.com/p/A/", {"trust_score": None, "x": 1})
    storage.save_post_analysis("task-1", "https://www.instagram.com/p/A/", {"trust_score": None, "x": 2})
    with Session(storage.engine()) as session:
        rows = session.query(PostAnalysis).all()
        assert [(row.task_id, row.result["x"], row.trust_score) for row in rows] == [("task-1", 2, None)]
    storage.engine().dispose()
    monkeypatch.setattr(storage, "_engine", None)
