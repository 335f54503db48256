"""Task events on Redis pub/sub: the channel names and the commands that publish them.

Workers publish; web processes listen (trustcard/api/event_hub.py). A message only says
that something happened to a task (`end`, or the sequence number of a progress write):
the reader then reads the task's state from Redis, which stays the one source of truth.
Pub/sub delivers to whoever is subscribed at that moment and keeps nothing, so a reader
registers before it reads, and what a stream may replay lives in the job's meta
(`PROGRESS_LOG_FIELD`), not in the messages.

No Flask here: the worker side imports this module too.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "trustcard:task:"
CHANNEL_PATTERN = CHANNEL_PREFIX + "*"
"""What each web process's one listener subscribes to (PSUBSCRIBE)."""
END_MESSAGE = "end"
"""The payload published when a task ends (completed, failed or cancelled)."""

PROGRESS_FIELD = "progress"
"""The job meta field the task view shows: the latest progress object."""
PROGRESS_LOG_FIELD = "progress_log"
"""The job meta field that keeps the last `PROGRESS_LOG_LIMIT` progress writes, each
`{"seq": n, "progress": {...}}`, so that a reconnecting stream replays what it missed."""
PROGRESS_LOG_LIMIT = 100


def channel(task_id: str) -> str:
    """The pub/sub channel of one task."""
    return CHANNEL_PREFIX + task_id


def task_id_of(channel_name: str | bytes) -> str | None:
    """The task id a channel name belongs to; None for a channel not of ours."""
    name = channel_name.decode() if isinstance(channel_name, bytes) else channel_name
    if not name.startswith(CHANNEL_PREFIX):
        return None
    return name[len(CHANNEL_PREFIX) :] or None


def end_command(task_id: str) -> tuple[Any, ...]:
    """The command that announces `task_id`'s end; it runs with the end record itself
    (trustcard.task_ends.job_end_commands), so no end path can forget it."""
    return ("PUBLISH", channel(task_id), END_MESSAGE)


def progress_command(task_id: str, seq: int) -> tuple[Any, ...]:
    """The command that announces progress write number `seq` of `task_id`."""
    return ("PUBLISH", channel(task_id), str(seq))


def append_progress(meta: dict[str, Any], progress: dict[str, Any]) -> int:
    """Record `progress` in a job's `meta` (latest value and bounded history); its sequence
    number, which counts from 1 and keeps counting past the history's bound."""
    history = [entry for entry in meta.get(PROGRESS_LOG_FIELD) or [] if isinstance(entry, dict)]
    seq = int(history[-1].get("seq", 0)) + 1 if history else 1
    history.append({"seq": seq, "progress": progress})
    meta[PROGRESS_FIELD] = progress
    meta[PROGRESS_LOG_FIELD] = history[-PROGRESS_LOG_LIMIT:]
    return seq


def progress_log(meta: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The progress history kept in a job's meta, oldest first (well-formed entries only)."""
    entries = (meta or {}).get(PROGRESS_LOG_FIELD) or []
    return [
        entry
        for entry in entries
        if isinstance(entry, dict) and isinstance(entry.get("seq"), int) and "progress" in entry
    ]
