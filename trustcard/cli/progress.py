"""Following a task until it ends, and showing its progress meanwhile.

The API's `progress` is `{"percent", "stage"}`, written by the job as it moves through its
stages. On a terminal the progress is a live bar on stderr (click's, so no extra
dependency); when stderr is a file or a pipe it becomes one line per new stage, which
logs and CI output keep readable; with `--json` nothing is shown. stdout is left for the
result, so `trustcard submit ... --wait > result.json` works with or without a terminal.

A task is followed on its event stream (`GET /tasks/<id>/events`), an analysis on its own
(`GET /analyses/<id>/events`, a view per stage transition), by the same `follow_events`: the
server pushes each progress and the end, so the end is seen within milliseconds and nothing
is polled. A stream that breaks is opened again with `Last-Event-ID`, so nothing is missed;
against a server without event streams the task or analysis is polled every `POLL_SECONDS`
instead.

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

STREAM_RESUMES = 3
"""How often a broken event stream is opened again (with Last-Event-ID) without an event
before the follower polls instead: enough for a stream cut once by a router or a worker
recycled, few enough that a proxy that never lets a stream through costs about a second.
Polling then rides out the rest of an outage (a deploy) as it always did."""

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
    try:
        return _poll(fetch, display, poll_seconds, reconnect_seconds, clock, sleep)
    finally:
        display.close()


def _poll(
    fetch: Callable[[], dict[str, Any]],
    display: Display,
    poll_seconds: float,
    reconnect_seconds: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    """`follow` without closing the display (its callers close it once)."""
    last_answer = clock()
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


def follow_events(
    open_stream: Callable[[str | None], Iterator[Event]],
    fetch: Callable[[], dict[str, Any]],
    display: Display,
    reconnect_seconds: float = RECONNECT_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    poll_seconds: float = POLL_SECONDS,
) -> dict[str, Any]:
    """Follow a task or an analysis on its event stream until its `end` event; return the final view.

    `open_stream(last_event_id)` opens the stream from after that id. A broken stream is opened
    again from the last id seen; after `STREAM_RESUMES` openings in a row without an event (a
    proxy that cuts streams, a web that cannot serve them) it is polled with `fetch` instead,
    as is a server without streams (`NoEventStream`) at once. Either way the wait gives up
    once `reconnect_seconds` have passed without an event or an answer.
    """
    last_id: str | None = None
    failing_since: float | None = None  # when the stream last broke, until an event comes again
    failed_openings = 0  # since the last event
    try:
        while True:
            try:
                for event in open_stream(last_id):
                    failing_since, failed_openings = None, 0
                    if event.id is not None:
                        last_id = event.id
                    task = _view_of(event)
                    if task is None:
                        continue
                    display.show(task)
                    if event.name == "end" or task["status"] in ENDED:
                        return task
                problem: Exception = ConnectionFailed("the event stream kept closing before the end")
            except NoEventStream as reason:
                log.debug("polling instead: %s", reason)
                return _poll(fetch, display, poll_seconds, reconnect_seconds, clock, sleep)
            except (ConnectionFailed, ApiError) as error:
                if isinstance(error, ApiError) and error.status < 500 and error.status != 429:
                    raise
                problem = error
            failing_since = clock() if failing_since is None else failing_since
            left = reconnect_seconds - (clock() - failing_since)
            if left < 0:
                raise problem
            failed_openings += 1
            if failed_openings > STREAM_RESUMES:
                log.debug("the event stream did not resume from %s (%s); polling instead", last_id, problem)
                return _poll(fetch, display, poll_seconds, left, clock, sleep)
            log.debug("event stream broke, opening it again from %s: %s", last_id, problem)
            sleep(poll_seconds)
    finally:
        display.close()


def _view_of(event: Event) -> dict[str, Any] | None:
    """What to show for an event: a task's or an analysis's view as it is (a task's `state`
    and `end`, an analysis's `state` and `end`), an analysis's `update` as the progress it
    made, a task's progress object as a running task's."""
    data = event.data
    if not isinstance(data, dict):
        return None
    transition = data.get("transition") if event.name == "update" else None
    if isinstance(transition, dict):
        return _stage_progress(data, transition)
    if "status" in data and ("task_id" in data or "id" in data):
        return data
    if event.name == "progress":
        return {"status": "started", "progress": data}
    return None


def _stage_progress(view: dict[str, Any], transition: dict[str, Any]) -> dict[str, Any] | None:
    """An analysis's `update`, shown as the analysis stood right after its transition.

    Its view is the row as read when the event was sent, so transitions that came close
    together (or were replayed after a reconnect) all carry the latest progress; the
    transition itself says how far it was: a stage started, or completed with the next one
    due (what the view's `progress` says when polled). So each stage is shown once, in order.
    Other transitions show nothing: the `end` event, or the stage's next run, follows them.
    """
    stages = view.get("stages")
    stages = stages if isinstance(stages, list) else []
    try:
        index = int(transition.get("index") or 0)
    except (TypeError, ValueError):
        return None
    status = transition.get("status")
    if status == "running":
        done, stage = index, transition.get("stage")
    elif status == "completed" and index + 1 < len(stages) and isinstance(stages[index + 1], dict):
        done, stage = index + 1, stages[index + 1].get("name")
    else:
        return None
    shown = {key: value for key, value in view.items() if key != "transition"}
    return {**shown, "status": "running", "progress": {"percent": 100 * done // len(stages), "stage": stage}}
