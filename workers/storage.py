"""Database access from inside jobs: one engine per process, built from the settings.

Job code never builds the Flask app; it gets its database here. The engine is made
lazily, in the process that runs the job, so no connection crosses a fork.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from trustcard.config import load_settings
from trustcard.database import make_engine
from trustcard.models import PostAnalysis

_engine: Engine | None = None
_engine_pid: int | None = None


def engine() -> Engine:
    global _engine, _engine_pid
    if _engine is None or _engine_pid != os.getpid():
        _engine = make_engine(load_settings().database_url)
        _engine_pid = os.getpid()
    return _engine


def save_post_analysis(task_id: str, url: str, result: dict[str, Any]) -> None:
    """Keep an analysis after RQ's result expires; a retried task overwrites its own row."""
    with Session(engine()) as session, session.begin():
        session.merge(PostAnalysis(task_id=task_id, url=url, trust_score=result.get("trust_score"), result=result))
