"""Task events on Redis pub/sub: the channel names and the commands that publish them.

Workers publish; web processes listen (trustcard/api/event_hub.py). A message only says
that something happened to a task (`end`, or the sequence number of a progress write):
the reader then reads the task's state from Redis, which stays the one source of truth.
Pub/sub delivers to whoever is subscribed at that moment and keeps nothing, so a reader
registers before it reads, and what a stream may replay lives in the job's meta
(`PROGRESS_LOG_FIELD`), not in the messages.

A task's events are published only while somebody watches it: a reader sets the task's
watch key (`watch_command`) in the same round trip as its first read, before that read, and
the publish checks the key in the same script call that records the write it announces
(`PUBLISH_IF_WATCHED`). Either the key was set before the write, and the message goes out,
or after it, and the reader's read sees the write. Without that, every task's end woke
every web process's listener (the pattern subscription hears every task), whoever waited:
about 2,000 wake-ups a second across two web processes while two workers drained, taking
CPU from the workers on the same cores.

No Flask here: the worker side imports this module too.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

WATCH_PREFIX = "trustcard:watch:"
"""`trustcard:watch:<task id>`: set while somebody waits on or streams the task."""
PUBLISH_IF_WATCHED = "TRUSTCARD.PUBLISH"
"""The command, in the command lists our scripts run (the worker's bookkeeping, the counts'
script in RQ's pipelines), that publishes only while the task's watch key exists:
`(PUBLISH_IF_WATCHED, watch key, channel, message)`. The watch key comes first, where those
scripts look for the keys a command touches."""
PUBLISH_IF_WATCHED_LUA = """
local function publish_if_watched(command)
  local watched = redis.pcall('EXISTS', command[2])
  if watched == 1 then return redis.pcall('PUBLISH', command[3], command[4]) end
  return watched
end
"""
"""The Lua function that runs a `PUBLISH_IF_WATCHED` command: like `redis.pcall`, it answers an
error as a reply, never raises."""
BEST_EFFORT_LUA = PUBLISH_IF_WATCHED_LUA + """
local function best_effort(command, who)
  local reply
  if command[1] == '""" + PUBLISH_IF_WATCHED + """' then
    reply = publish_if_watched(command)
  else
    reply = redis.pcall(unpack(command))
  end
  if type(reply) == 'table' and reply.err then
    redis.log(redis.LOG_WARNING, who .. tostring(command[1]) .. ' ' .. tostring(command[2]) .. ': ' .. tostring(reply.err))
  end
  return reply
end
"""
"""`best_effort(command, who)`, for the scripts that run lists of best-effort commands (the
worker's bookkeeping, the counts' script in RQ's pipelines): one command, `PUBLISH_IF_WATCHED`
included, whose failure is logged by Redis (prefixed `who`) and stops nothing."""
PUBLISH_IF_WATCHED_SCRIPT = PUBLISH_IF_WATCHED_LUA + """
return publish_if_watched({false, KEYS[1], ARGV[1], ARGV[2]})
"""
"""A `PUBLISH_IF_WATCHED` as a script of its own: KEYS the watch key, ARGV the channel and the message."""

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


def watch_key(task_id: str) -> str:
    return WATCH_PREFIX + task_id


WATCH_MARGIN_SECONDS = 5.0
"""A reader's watch outlives the time until its next read by this much (the reply's way)."""


def watch_for(seconds: float) -> float:
    """How long a watch set now must last for a reader that reads again within `seconds`."""
    return seconds + WATCH_MARGIN_SECONDS


def watch_command(task_id: str, seconds: float) -> tuple[Any, ...]:
    """The command that makes `task_id`'s events published for the next `seconds` (a reader
    renews it with each read); it goes before the reader's read, in the same round trip."""
    return ("SET", watch_key(task_id), "1", "PX", max(1, int(seconds * 1000)))


def end_command(task_id: str) -> tuple[Any, ...]:
    """The command that announces `task_id`'s end to whoever watches it; it runs with the end
    record itself (trustcard.task_ends.job_end_commands), so no end path can forget it."""
    return (PUBLISH_IF_WATCHED, watch_key(task_id), channel(task_id), END_MESSAGE)


def progress_arguments(task_id: str, seq: int) -> tuple[Any, ...]:
    """`EVAL` arguments that announce progress write number `seq` of `task_id` to whoever
    watches it."""
    return (PUBLISH_IF_WATCHED_SCRIPT, 1, watch_key(task_id), channel(task_id), str(seq))


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
