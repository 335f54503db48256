"""`GET /analyses/<id>/events`: an analysis followed as Server-Sent Events.

The record lives in the database, which announces nothing, so the stream reads the row
every `POLL_SECONDS` (one primary-key read; under gevent the sleep yields) and sends an
event when it changed: `state` at once, `update` for each change seen (a stage started or
ended), `end` with the final view, then it closes. Ids count the events (1, 2, ...);
a reconnecting client gets the state at once again, so nothing is replayed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from trustcard.analyses.service import ENDED, AnalysisService
from trustcard.api.task_stream import HEARTBEAT, event
from trustcard.exceptions import DatabaseUnavailable

POLL_SECONDS = 0.25


def analysis_events(service: AnalysisService, first: dict[str, Any], heartbeat_seconds: float,
                    poll_seconds: float = POLL_SECONDS) -> Iterator[bytes]:
    """The events after `first` (the view read before the answer began, so a 404 is a 404)."""
    number = 1
    yield event("state", number, first)
    view, beat = first, time.monotonic()
    while view["status"] not in ENDED:
        time.sleep(poll_seconds)
        try:
            latest = service.get(view["id"])
        except DatabaseUnavailable:  # a hiccup: keep the stream, read again at the next poll
            latest = view
        if latest["updated_at"] != view["updated_at"] or latest["status"] != view["status"]:
            view, beat = latest, time.monotonic()
            if view["status"] not in ENDED:
                number += 1
                yield event("update", number, view)
        elif time.monotonic() - beat >= heartbeat_seconds:
            beat = time.monotonic()
            yield HEARTBEAT
    yield event("end", number + 1, view)
