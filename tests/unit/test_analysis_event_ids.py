"""The ids of an analysis's events, rebuilt from its stage entries alone.

Pins that each id keeps its meaning as the row moves on (a replay rebuilt later sends the
same ids for the same transitions), that RQ's retries, a cancel and a retry of the whole
analysis each add transitions in order, and that the end's id sorts between them.
"""

from __future__ import annotations

import copy
from typing import Any

from trustcard.analyses import events


def entry(name: str, status: str = "pending", runs: int = 0, error: str | None = None) -> dict[str, Any]:
    return {"name": name, "status": status, "runs": runs, "error": error}


def snapshots() -> list[list[dict[str, Any]]]:
    """A two-stage analysis through an RQ retry, a final failure, a retry of the analysis,
    and its completion: the rows as each write left them."""
    rows = [[entry("a"), entry("b")]]

    def step(**changes: dict[str, Any]) -> None:
        row = copy.deepcopy(rows[-1])
        for stage in row:
            stage.update(changes.get(stage["name"], {}))
        rows.append(row)

    step(a={"status": "running", "runs": 1})
    step(a={"status": "completed"})
    step(b={"status": "running", "runs": 1})
    step(b={"error": "boom " + events.RETRY_MARK})
    step(b={"runs": 2, "error": None})
    step(b={"status": "failed", "error": "boom"})
    step(b={"status": "pending", "error": None})  # POST /analyses/<id>/retry
    step(b={"status": "running", "runs": 3})
    step(b={"status": "completed"})
    return rows


def test_each_write_adds_at_most_one_transition_and_earlier_ids_keep_their_meaning() -> None:
    seen: list[events.Transition] = []
    for row in snapshots():
        now = events.transitions(row)
        assert len(now) - len(seen) in (0, 1), row
        assert [t.id for t in now[: len(seen)]] == [t.id for t in seen]
        assert [(t.stage, t.run) for t in now[: len(seen)]] == [(t.stage, t.run) for t in seen]
        seen = now
    assert [(t.id, t.stage, t.run, t.status) for t in seen] == [
        (2, "a", 1, "running"), (4, "a", 1, "completed"),
        (6, "b", 1, "running"), (8, "b", 1, "retried"),
        (10, "b", 2, "running"), (12, "b", 2, "retried"),
        (14, "b", 3, "running"), (16, "b", 3, "completed"),
    ]


def test_the_end_id_is_odd_and_a_stage_started_again_after_a_retry_sorts_after_it() -> None:
    rows = snapshots()
    failed = rows[6]
    assert failed[1]["status"] == "failed"
    end = events.end_id(failed)
    assert end == 13 and end % 2 == 1
    restarted = events.transitions(rows[8])
    assert [t.id for t in restarted if t.id > end] == [14]


def test_a_stage_cancelled_before_it_started_adds_nothing_and_one_cancelled_while_running_adds_its_end() -> None:
    assert events.transitions([entry("a", "completed", 1), entry("b", "cancelled")])[-1].stage == "a"
    last = events.transitions([entry("a", "completed", 1), entry("b", "cancelled", 1)])[-1]
    assert (last.stage, last.status, last.id) == ("b", "cancelled", 8)
    assert events.last_transition_id([entry("a"), entry("b")]) == 0
