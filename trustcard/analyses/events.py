"""An analysis's stage transitions, rebuilt from its row, and the message that announces a write.

No log of events is kept anywhere: the row says, per stage, how often it started (`runs`)
and how its latest run stands, and stages only ever move forward (a stage starts only once
every stage before it completed, and a retry resumes at the first stage not completed), so
the transitions so far are, in order: for each stage, for each of its runs, `running`, then
how the run ended. A run that is not the stage's latest ended `retried` (it did not complete
and the stage ran again); the details of earlier runs are not stored.

Ids: the n-th transition has id 2n; the analysis's end has the odd id 2N+1 after its N
transitions, so a stage that starts again after a retry (transition N+1, id 2N+2) sorts
after the end a client already had. An id never changes its meaning for a given analysis.

No Flask here: the worker side imports this module to announce its writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from trustcard.connections import REDIS_DOWN_ERRORS
from trustcard.task_events import channel

log = logging.getLogger(__name__)

HUB_PREFIX = "analysis-"
"""What an analysis's channel is named under the task channels the web's hub listens to;
RQ job ids cannot clash with it in practice (ours are UUIDs)."""
WRITTEN_MESSAGE = "written"
RETRY_MARK = "(to be retried)"
"""How a stage's entry says that its running attempt failed and RQ will run it again."""


@dataclass(frozen=True)
class Transition:
    id: int
    stage: str
    index: int
    run: int
    status: str
    """running, completed, failed, cancelled, or retried."""

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "index": self.index, "run": self.run, "status": self.status}


def hub_key(analysis_id: str) -> str:
    """The key the web's event hub files an analysis's waiters under."""
    return HUB_PREFIX + analysis_id


def _run_end(entry: dict[str, Any]) -> str | None:
    """How the stage's latest run ended, or None while it runs."""
    status = str(entry.get("status"))
    if status == "running":
        return "retried" if str(entry.get("error") or "").endswith(RETRY_MARK) else None
    if status == "pending":  # reset by a retry of the analysis: it runs again
        return "retried"
    return status


def transitions(stages: list[dict[str, Any]]) -> list[Transition]:
    """Every stage transition so far, in the order they happened, with their ids."""
    found: list[Transition] = []

    def add(entry: dict[str, Any], index: int, run: int, status: str) -> None:
        found.append(Transition(2 * (len(found) + 1), str(entry["name"]), index, run, status))

    for index, entry in enumerate(stages):
        runs = int(entry.get("runs") or 0)
        for run in range(1, runs + 1):
            add(entry, index, run, "running")
            ended = "retried" if run < runs else _run_end(entry)
            if ended is not None:
                add(entry, index, run, ended)
    return found


def last_transition_id(stages: list[dict[str, Any]]) -> int:
    """The id of the latest transition (0 before the first)."""
    found = transitions(stages)
    return found[-1].id if found else 0


def end_id(stages: list[dict[str, Any]]) -> int:
    """The id of the `end` event of an analysis that ended with these stages."""
    return last_transition_id(stages) + 1


def announce(connection: Redis, analysis_id: str) -> None:
    """Say that the analysis's row was written (its streams and long polls read it again).
    Best effort: the record is already stored, and readers re-read it now and then anyway."""
    try:
        connection.publish(channel(hub_key(analysis_id)), WRITTEN_MESSAGE)
    except (RedisError, *REDIS_DOWN_ERRORS) as error:
        log.warning("analysis %s: could not announce a write (%s)", analysis_id, error)
