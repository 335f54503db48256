"""How the figures are kept in Redis: three hashes of counters, written best effort.

- `trustcard:metrics:tasks_ended`: field `<type>|<outcome>`, tasks ended that way;
- `trustcard:metrics:task_duration`: field `<type>|<bound>`, tasks whose run time fell in
  that bucket (not cumulative: the collector adds them up), and `<type>|sum`, seconds;
- `trustcard:metrics:submissions`: field `<outcome>`, submissions answered that way.

A task's end is counted in the same Redis call that records it (`trustcard.task_ends`): a
script call queued in RQ's pipeline, or the commands of `end_commands` run by the worker's
bookkeeping script. Either way the increments run under `pcall` inside
a script, so a broken counter key cannot fail the transaction or the script that ends the
task; and every write from Python here logs and swallows a Redis error. Counters never
expire: they are a few hundred bytes, and Prometheus expects them to only go up.
"""

from __future__ import annotations

import json
import logging
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from trustcard.metrics.outcomes import DURATION_BUCKETS, SubmissionOutcome, TaskOutcome
from trustcard.task_events import BEST_EFFORT_LUA

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

TASKS_ENDED_KEY = "trustcard:metrics:tasks_ended"
TASK_DURATION_KEY = "trustcard:metrics:task_duration"
SUBMISSIONS_KEY = "trustcard:metrics:submissions"
SEPARATOR = "|"
SUM_FIELD = "sum"
INF_BOUND = "+Inf"

_COUNT = BEST_EFFORT_LUA + """
if ARGV[2] ~= '' and not redis.call('SET', ARGV[2], '1', 'NX', 'EX', ARGV[3]) then return 0 end
for _, command in ipairs(cjson.decode(ARGV[1])) do best_effort(command, 'trustcard metrics: ') end
return 1
"""
# ARGV: the increments as a JSON list of commands; a marker key ('' for none) and its
# lifetime: with a marker, the increments run only if the marker was not set yet, which
# makes an end that several processes may settle at once count once.


def bound_label(bound: float) -> str:
    """A bucket's upper bound as Prometheus prints it (`0.005`, `1.0`, `+Inf`)."""
    return repr(float(bound))


def bucket_of(seconds: float) -> str:
    """The label of the smallest bucket that holds `seconds`."""
    index = bisect_left(DURATION_BUCKETS, seconds)
    return bound_label(DURATION_BUCKETS[index]) if index < len(DURATION_BUCKETS) else INF_BOUND


def end_commands(job_type: str, outcome: TaskOutcome, seconds: float | None) -> list[tuple[Any, ...]]:
    """The increments for one ended task: its outcome, and its run time when it ran."""
    commands: list[tuple[Any, ...]] = [
        ("HINCRBY", TASKS_ENDED_KEY, f"{job_type}{SEPARATOR}{outcome.value}", 1),
    ]
    if seconds is not None:
        commands.append(("HINCRBY", TASK_DURATION_KEY, f"{job_type}{SEPARATOR}{bucket_of(seconds)}", 1))
        commands.append(("HINCRBYFLOAT", TASK_DURATION_KEY, f"{job_type}{SEPARATOR}{SUM_FIELD}", repr(seconds)))
    return commands


def script_args(commands: list[tuple[Any, ...]], marker: str = "", ttl: int = 0) -> tuple[Any, ...]:
    keys = sorted({command[1] for command in commands})
    return (_COUNT, len(keys), *keys, json.dumps(commands), marker, ttl)


def run_count(
    connection: Redis, commands: list[tuple[Any, ...]], *, marker: str = "", ttl: int = 0, what: str = "count"
) -> bool:
    """Run `commands` now (once per `marker`, when given); False if not counted. Never raises."""
    if not commands:
        return False
    try:
        return bool(connection.eval(*script_args(commands, marker, ttl)))
    except RedisError as error:
        log.warning("metrics: %s not counted, Redis error (%s)", what, error)
        return False


def count_submission(connection: Redis, outcome: SubmissionOutcome, tasks: int = 1) -> None:
    """A submission of `tasks` tasks (a batch's, or one) answered `outcome`. Never raises."""
    try:
        connection.hincrby(SUBMISSIONS_KEY, outcome.value, tasks)
    except RedisError as error:
        log.warning("metrics: submission %s not counted, Redis error (%s)", outcome.value, error)
    except Exception:  # noqa: BLE001 - runs after the answer was sent; nothing may escape
        log.exception("metrics: submission %s not counted", outcome.value)
