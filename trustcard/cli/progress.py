"""Following a task until it ends, and showing its progress meanwhile.

The API's `progress` is `{"percent", "stage"}`, written by the job as it moves through its
stages. On a terminal the progress is a live bar on stderr (click's, so no extra
dependency); when stderr is a file or a pipe it becomes one line per new stage, which
logs and CI output keep readable; with `--json` nothing is shown. stdout is left for the
result, so `trustcard submit ... --wait > result.json` works with or without a terminal.

A task is followed on its event stream (`GET /tasks/<id>/events`): the server pushes each
progress and the end, so the end is seen within milliseconds and nothing is polled. A stream
that breaks is opened again with `Last-Event-ID`, so nothing is missed; against a server
without event streams the task is polled every `POLL_SECONDS` instead.

While following, the API may be briefly unreachable (a deploy restarts the web, Redis
restarts): such failures are retried for `RECONNECT_SECONDS` before giving up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TextIO

import click

from trustcard.cli.client import ApiError, ConnectionFailed, Event, NoEventStream

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
"""Pause between two status reads: quick enough for a 2-second stage, cheap for the API."""

RECONNECT_SECONDS = 30.0
"""How long a wait survives an API that does not answer (or answers 5xx or 429) before giving up."""

ENDED = frozenset({"completed", "failed", "cancelled"})

STATUS_LABELS = {"pending": "waiting", "started": "running"}


class Display(Protocol):
    """Where a followed task's progress goes."""

    def show(self, task: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def progress_of(task: dict[str, Any]) -> tuple[int, str]:
    """The task's percent (0 to 100) and what to call its current step.

    A task without progress is at 0 and named by its status; a completed one is at 100.
    """
    status = task["status"]
    progress = task.get("progress")
    progress = progress if isinstance(progress, dict) else {}
    try:
        percent = max(0, min(100, int(progress.get("percent") or 0)))
    except (TypeError, ValueError):
        percent = 0
    stage = progress.get("stage")
    if status == "completed":
        return 100, str(stage) if stage and percent == 100 else "completed"
    return percent, str(stage) if stage else STATUS_LABELS.get(status, status)


class Silent:
    """For `--json`: nothing but the final JSON on stdout."""

    def show(self, task: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class StageLines:
    """One line per new stage, for a stderr that is not a terminal: `[ 40%] Checking for deepfakes...`."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last: str | None = None

    def show(self, task: dict[str, Any]) -> None:
        if task["status"] in ENDED and task["status"] != "completed":
            return  # the caller says how it ended
        percent, step = progress_of(task)
        if step != self.last:
            self.last = step
            click.echo(f"[{percent:3d}%] {step}", file=self.stream)

    def close(self) -> None:
        pass


class LiveBar:
    """A bar redrawn in place on a terminal: `running  [############------------]   40%  Checking for deepfakes...`."""

    def __init__(self, stream: TextIO) -> None:
        self.bar = click.progressbar(
            length=100,
            label=f"{STATUS_LABELS['pending']:<9}",
            file=stream,
            show_eta=False,
            show_percent=True,
            item_show_func=lambda step: step,
            width=30,
        )
        self.bar.__enter__()

    def show(self, task: dict[str, Any]) -> None:
        percent, step = progress_of(task)
        label = STATUS_LABELS.get(task["status"], task["status"])
        self.bar.label = f"{label:<9}"  # every label as wide, so the bar does not jump
        self.bar.current_item = None if step == label else step
        if percent != self.bar.pos:
            self.bar.update(percent - self.bar.pos)
        self.bar.render_progress()  # also when only the label or stage changed: update(0) draws nothing

    def close(self) -> None:
        self.bar.__exit__(None, None, None)


def display_for(stream: TextIO, as_json: bool) -> Display:
    """The display that suits the output: silent for JSON, a bar on a terminal, else lines."""
    if as_json:
        return Silent()
    if stream.isatty():
        return LiveBar(stream)
    return StageLines(stream)


def follow(
    fetch: Callable[[], dict[str, Any]],
    display: Display,
    poll_seconds: float = POLL_SECONDS,
    reconnect_seconds: float = RECONNECT_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Read the task with `fetch` until it has ended, showing each answer; return the last one.

    4xx answers (unknown task, bad key) end the wait at once; an unreachable API, a 5xx or a
    429 is retried until `reconnect_seconds` have passed without a good answer.
    """
    last_answer = clock()
    try:
        while True:
            try:
                task = fetch()
            except (ConnectionFailed, ApiError) as error:
                if isinstance(error, ApiError) and error.status < 500 and error.status != 429:
                    raise
                if clock() - last_answer > reconnect_seconds:
                    raise
                log.debug("no answer while following, retrying: %s", error)
            else:
                last_answer = clock()
                display.show(task)
                if task["status"] in ENDED:
                    return task
            sleep(poll_seconds)
    finally:
        display.close()


def follow_events(
    open_stream: Callable[[str | None], Iterator[Event]],
    fetch: Callable[[], dict[str, Any]],
    display: Display,
    reconnect_seconds: float = RECONNECT_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    poll_seconds: float = POLL_SECONDS,
) -> dict[str, Any]:
    """Follow the task on its event stream until its `end` event; return the final view.

    `open_stream(last_event_id)` opens the stream from after that id. A broken stream is opened
    again from the last id seen, for up to `reconnect_seconds` without an event; a server
    without streams (`NoEventStream`) is polled with `fetch` instead, as `follow` does.
    """
    last_id: str | None = None
    failing_since: float | None = None  # when the stream last broke, until an event comes again
    try:
        while True:
            try:
                for event in open_stream(last_id):
                    failing_since = None
                    if event.id is not None:
                        last_id = event.id
                    task = _task_of(event)
                    if task is None:
                        continue
                    display.show(task)
                    if event.name == "end" or task["status"] in ENDED:
                        return task
                problem: Exception = ConnectionFailed("the event stream kept closing before the task's end")
            except NoEventStream as reason:
                log.debug("polling instead: %s", reason)
                return follow(fetch, display, poll_seconds, reconnect_seconds, clock, sleep)
            except (ConnectionFailed, ApiError) as error:
                if isinstance(error, ApiError) and error.status < 500 and error.status != 429:
                    raise
                problem = error
            failing_since = clock() if failing_since is None else failing_since
            if clock() - failing_since > reconnect_seconds:
                raise problem
            log.debug("event stream broke, opening it again from %s: %s", last_id, problem)
            sleep(poll_seconds)
    finally:
        display.close()


def _task_of(event: Event) -> dict[str, Any] | None:
    """What to show for an event: a task view as it is, a progress object as a running task's."""
    data = event.data
    if not isinstance(data, dict):
        return None
    if "status" in data and "task_id" in data:
        return data
    if event.name == "progress":
        return {"status": "started", "progress": data}
    return None
