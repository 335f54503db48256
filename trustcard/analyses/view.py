"""An analysis as the API reports it: built from its row, plain data."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from trustcard.models import Analysis

STAGE_KEYS = ("name", "queue", "status", "output", "error", "worker", "runs", "started_at", "ended_at")


def _time(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:  # SQLite gives back what was stored in UTC without its zone
        value = value.replace(tzinfo=timezone.utc)
    return value.isoformat().replace("+00:00", "Z")


def progress(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """How far it is: stages completed of all, and the one running (or next) by name."""
    done = sum(1 for stage in stages if stage["status"] == "completed")
    current = next((stage["name"] for stage in stages if stage["status"] != "completed"), None)
    return {"percent": int(100 * done / len(stages)) if stages else 100, "completed": done,
            "total": len(stages), "stage": current}


def analysis_view(row: Analysis) -> dict[str, Any]:
    stages = [{key: stage.get(key) for key in STAGE_KEYS} for stage in row.stages]
    result = None
    if row.status == "completed":
        result = {"trust_score": row.trust_score, "stages": {stage["name"]: stage["output"] for stage in stages}}
    return {
        "id": row.id,
        "url": row.url,
        "shortcode": row.shortcode,
        "status": row.status,
        "stages": stages,
        "progress": progress(row.stages),
        "result": result,
        "trust_score": row.trust_score,
        "error": row.error,
        "failed_stage": row.failed_stage,
        "submitted_by": row.submitted_by,
        "callback": row.callback if row.callback is not None else (
            {"url": row.callback_url, "status": "waiting", "attempts": 0, "last_error": None}
            if row.callback_url else None),
        "created_at": _time(row.created_at),
        "updated_at": _time(row.updated_at),
        "ended_at": _time(row.ended_at),
    }
