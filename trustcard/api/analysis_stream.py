"""`GET /analyses/<id>/events` and `GET /analyses/<id>?wait=N`: an analysis, pushed.

The row is the record; the stage jobs (and the web's cancel and retry) PUBLISH on the
analysis's channel after each write (`trustcard.analyses.events.announce`), which the web's
one event-hub listener already hears. A reader registers its waiter first, then reads the
row, and reads it again each time it is woken; a quiet reader reads it every
`SAFETY_READ_SECONDS` anyway, for a message lost (Redis restarted, a publish that failed).
Without the hub (Redis down) the stream falls back to reading the row every
`FALLBACK_POLL_SECONDS`: the analysis lives in the database, which still answers.

Events: `state` (the view) at once, with the id of the last transition it includes; one
`update` per stage transition (the view as read then, plus `transition`: stage, index,
run, status), rebuilt from the row so that two quick transitions are never one event and a
client reconnecting with `Last-Event-ID` gets every transition after it; `end` (the final
view), then the stream closes. Ids: `trustcard.analyses.events`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from trustcard.analyses.events import Transition, end_id, hub_key, last_transition_id, transitions
from trustcard.analyses.service import ENDED, AnalysisService
from trustcard.api.task_stream import HEARTBEAT, event
from trustcard.exceptions import DatabaseUnavailable, QueueUnavailable

if TYPE_CHECKING:
    from trustcard.api.event_hub import EventHub, Waiter

log = logging.getLogger(__name__)

SAFETY_READ_SECONDS = 3.0
"""A woken reader reads at once; a quiet one reads the row this often anyway."""
FALLBACK_POLL_SECONDS = 0.5
"""How often the row is read when the event hub cannot listen (Redis down)."""


class _Wake:
    """The reader's waiter on the hub, or a plain sleep when the hub is not listening."""

    def __init__(self, hub: EventHub, analysis_id: str) -> None:
        self._hub = hub
        self.waiter: Waiter | None
        try:
            self.waiter = hub.register(hub_key(analysis_id))
        except QueueUnavailable as error:
            log.warning("analysis %s: no event hub (%s); reading the row every %.1f s",
                        analysis_id, error, FALLBACK_POLL_SECONDS)
            self.waiter = None

    def wait(self, seconds: float) -> None:
        """Return when woken, or after `seconds` (sooner without the hub)."""
        if seconds <= 0:
            return
        if self.waiter is None:
            time.sleep(min(seconds, FALLBACK_POLL_SECONDS))
            return
        try:
            self.waiter.wait(min(seconds, SAFETY_READ_SECONDS))
        except QueueUnavailable:  # the listener lost Redis: poll the database from now on
            self.close()

    def close(self) -> None:
        if self.waiter is not None:
            self._hub.unregister(self.waiter)
            self.waiter = None


def wait_for_end(service: AnalysisService, hub: EventHub, analysis_id: str, seconds: float) -> dict[str, Any]:
    """The analysis as soon as it has ended, else after `seconds` as it is then."""
    deadline = time.monotonic() + seconds
    wake = _Wake(hub, analysis_id)
    try:
        view = service.get(analysis_id)
        while view["status"] not in ENDED:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            wake.wait(remaining)
            view = service.get(analysis_id)
        return view
    finally:
        wake.close()


def _update(view: dict[str, Any], transition: Transition) -> bytes:
    return event("update", transition.id, {**view, "transition": transition.to_dict()})


class AnalysisStream:
    """One client's stream of one analysis. The waiter is registered, and the first read
    done, before the answer starts: an unknown id is a JSON 404, and no write is missed."""

    def __init__(self, service: AnalysisService, hub: EventHub, analysis_id: str, after: int | None,
                 heartbeat_seconds: float) -> None:
        self.service = service
        self.analysis_id = analysis_id
        self.after = after
        self.heartbeat_seconds = heartbeat_seconds
        self._wake = _Wake(hub, analysis_id)
        try:
            self.view = service.get(analysis_id)
        except BaseException:
            self._wake.close()
            raise

    @property
    def already_delivered(self) -> bool:
        """The client's Last-Event-ID is this end (or past it): nothing is left to send."""
        return (self.after is not None and self.view["status"] in ENDED
                and self.after >= end_id(self.view["stages"]))

    def close(self) -> None:
        self._wake.close()

    def events(self) -> Iterator[bytes]:
        try:
            yield from self._events()
        finally:
            self.close()

    def _events(self) -> Iterator[bytes]:
        sent = self.after
        if sent is None:
            sent = last_transition_id(self.view["stages"])
            yield event("state", sent, self.view)
        elif not self._fresh(sent) and self.view["status"] not in ENDED:
            yield b": resumed\n\n"  # nothing missed yet: a first byte at once, for the router
        last_write = time.monotonic()
        while True:
            for transition in self._fresh(sent):
                yield _update(self.view, transition)
                sent, last_write = transition.id, time.monotonic()
            if self.view["status"] in ENDED:
                yield event("end", max(end_id(self.view["stages"]), sent + 1), self.view)
                return
            if time.monotonic() - last_write >= self.heartbeat_seconds:
                yield HEARTBEAT
                last_write = time.monotonic()
            self._wake.wait(self.heartbeat_seconds - (time.monotonic() - last_write))
            try:
                self.view = self.service.get(self.analysis_id)
            except DatabaseUnavailable:  # a hiccup: keep the stream, read again when next woken
                pass

    def _fresh(self, sent: int) -> list[Transition]:
        return [transition for transition in transitions(self.view["stages"]) if transition.id > sent]
