"""Pushed task state: the `?wait=N` long poll and the Server-Sent Events stream.

Both block on the web process's event hub (one pub/sub listener), never on a poll loop:
a waiter registers first, then the task is read, then each message wakes it to read the
task again. Redis stays the one source of truth; the messages only say "look again".

The stream's event ids: each progress write has its sequence number (1, 2, ...); the
first event (`state`, the task's view at once, since a router waits at most 30 s for a
first byte) carries the number of the last progress write it includes; `end` takes the
number after the last progress write. So `Last-Event-ID: n` means "I have everything up to
n": the stream replays the progress writes after n, then goes on; a client that already
had the end gets 204, which tells an EventSource to stop reconnecting.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from trustcard.api.operations import Parameter
from trustcard.exceptions import QueueUnavailable, ValidationFailed
from trustcard.status import TaskStatus
from trustcard.task_events import watch_for

if TYPE_CHECKING:
    from trustcard.api.event_hub import EventHub, Waiter
    from trustcard.task_service import TaskService
    from trustcard.task_view import TaskView

log = logging.getLogger(__name__)

MAX_WAIT_SECONDS = 25.0
"""Under the 30 s a platform's router gives a request to answer."""
LAST_EVENT_ID_HEADER = "Last-Event-ID"
def wait_parameter(waited_for: str) -> Parameter:
    """`?wait=N` on the read of a `waited_for` ("task", "analysis"), read by `wait_seconds`."""
    return Parameter(
        "wait",
        "query",
        f"Seconds to wait for the {waited_for}'s end before answering (more than 0, at most "
        f"{MAX_WAIT_SECONDS:g}).",
        {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_WAIT_SECONDS},
    )


WAIT_PARAMETER = wait_parameter("task")
LAST_EVENT_ID_PARAMETER = Parameter(
    LAST_EVENT_ID_HEADER,
    "header",
    "The id of the last event a reconnecting client received.",
    {"type": "string", "pattern": "^[0-9]+$"},
)
"""Read by `last_event_id`."""
HEARTBEAT = b": keep-alive\n\n"
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
RECHECK_SECONDS = 60.0
"""A quiet stream reads its task again this often anyway (at a heartbeat): a safety net for
an end announced before it was recorded (RQ's clean-up of a task whose worker died counts,
and so announces, just before it fails the task). Not at every heartbeat: a thousand
streams opened together would read together every 15 s."""


def has_ended(view: TaskView) -> bool:
    return TaskStatus(view.status).has_ended


def wait_seconds(raw: str | None) -> float | None:
    """`?wait=N` as seconds: None when absent; 422 naming `wait` unless 0 < N <= 25."""
    if raw is None:
        return None
    problem = f"must be a number of seconds greater than 0 and at most {MAX_WAIT_SECONDS:g}"
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_WAIT_SECONDS:
        raise ValidationFailed(
            f"Invalid parameters: wait {problem}.", problems=[{"parameter": "wait", "problem": problem}]
        )
    return seconds


_PREFER_WAIT = re.compile(r"(?:^|[\s,;])wait\s*=\s*\"?(\d+(?:\.\d+)?)\"?", re.IGNORECASE)


def preferred_wait(raw: str | None) -> float | None:
    """`Prefer: wait=N` (RFC 7240) on a submission, as seconds capped at 25; None when absent.
    A preference is a hint, not a command: one that cannot be read is ignored, never refused."""
    match = _PREFER_WAIT.search(raw or "")
    if match is None:
        return None
    seconds = min(float(match.group(1)), MAX_WAIT_SECONDS)
    return seconds if seconds > 0 else None


def last_event_id(raw: str | None) -> int | None:
    """The Last-Event-ID a reconnecting client sent; 422 naming it when it is not ours."""
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value < 0:
        problem = "must be the id of an event of this stream (a whole number)"
        raise ValidationFailed(
            f"Invalid parameters: {LAST_EVENT_ID_HEADER} {problem}.",
            problems=[{"parameter": LAST_EVENT_ID_HEADER, "problem": problem}],
        )
    return value


def wait_for_end(service: TaskService, hub: EventHub, task_id: str, seconds: float) -> TaskView:
    """The task's view as soon as it has ended, else after `seconds` as it is then.

    A task that has ended already (a quick one, read back a moment after its submission) is
    answered from one plain read: no waiter, no watch key written. Otherwise the waiter
    registers, then the task is read again, watched: an end between the two reads is seen by
    the second, and one after it is announced."""
    deadline = time.monotonic() + seconds
    view = service.get(task_id)
    if has_ended(view):
        return view
    with hub.waiting(task_id) as waiter:
        return wait_on(service, waiter, service.get(task_id, watch_seconds=watch_for(seconds)), deadline)


def wait_on(service: TaskService, waiter: Waiter, view: TaskView, deadline: float) -> TaskView:
    """`view` once its task has ended, read again at each message, else as it is at `deadline`
    (monotonic). `view` must be newer than `waiter`'s registration: read after it, or, for a
    submission that registered first, the task just enqueued (so its wait skips a read), and
    the task watched until `deadline` (the read's or the admission's `watch_command`)."""
    while not has_ended(view):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if waiter.wait(remaining):
            view = service.get(view.task_id)
    return view


def event(name: str, event_id: int, data: Any) -> bytes:
    body = json.dumps(data, separators=(",", ":"))
    return f"event: {name}\nid: {event_id}\ndata: {body}\n\n".encode()


class TaskStream:
    """One client's event stream for one task. The waiter is registered, and the first
    read done, before the answer starts, so an unknown task is a JSON 404 and nothing
    published after that read is missed."""

    def __init__(
        self, service: TaskService, hub: EventHub, task_id: str, after: int | None, heartbeat_seconds: float
    ) -> None:
        self.service = service
        self.task_id = task_id
        self.after = after
        self.heartbeat_seconds = heartbeat_seconds
        self._hub = hub
        self._watch_seconds = watch_for(RECHECK_SECONDS + heartbeat_seconds)
        """Each read renews the watch; a quiet stream reads again within a recheck and a heartbeat."""
        self.waiter: Waiter = hub.register(task_id)
        try:
            self.view, self.log = service.get_with_progress_log(task_id, watch_seconds=self._watch_seconds)
        except BaseException:
            self.close()
            raise

    @property
    def end_id(self) -> int:
        return (self.log[-1]["seq"] if self.log else 0) + 1

    @property
    def already_delivered(self) -> bool:
        """The client's Last-Event-ID is the end (or past it): there is nothing to send."""
        return self.after is not None and has_ended(self.view) and self.after >= self.end_id

    def close(self) -> None:
        self._hub.unregister(self.waiter)

    def events(self) -> Iterator[bytes]:
        try:
            yield from self._events()
        except QueueUnavailable as error:  # too late for a 503: the client reconnects
            log.warning("task %s: event stream closed, %s", self.task_id, error)
        finally:
            self.close()

    def _events(self) -> Iterator[bytes]:
        sent = self.after
        oldest = self.log[0]["seq"] if self.log else 1
        if sent is None or sent < oldest - 1:  # a new client, or one that missed too much
            sent = self.log[-1]["seq"] if self.log else 0
            yield event("state", sent, self.view.to_dict())
        elif not any(entry["seq"] > sent for entry in self.log) and not has_ended(self.view):
            yield b": resumed\n\n"  # nothing missed yet: a first byte at once, for the router
        last_write = last_read = time.monotonic()
        while True:
            fresh = [entry for entry in self.log if entry["seq"] > sent]
            for entry in fresh:
                yield event("progress", entry["seq"], entry["progress"])
                sent = entry["seq"]
                last_write = time.monotonic()
            if has_ended(self.view):
                yield event("end", max(self.end_id, sent + 1), self.view.to_dict())
                return
            remaining = self.heartbeat_seconds - (time.monotonic() - last_write)
            woken = self.waiter.wait(remaining) if remaining > 0 else []
            if not woken:
                yield HEARTBEAT
                last_write = time.monotonic()
                if last_write - last_read < RECHECK_SECONDS:
                    continue
            self.view, self.log = self.service.get_with_progress_log(self.task_id, watch_seconds=self._watch_seconds)
            last_read = time.monotonic()
