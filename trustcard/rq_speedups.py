"""Four of RQ's helpers, made cheap for what this service gives them; behaviour unchanged.

Found with py-spy on a job process of the Procfile's worker draining `add` jobs (Python 3.11):

- `rq.serializers.resolve_serializer` checks its argument with `isinstance` against a
  runtime-checkable Protocol, which walks the protocol's attributes on every call (about
  20 us). RQ calls it whenever it builds a Job, Queue, registry or Result, some twenty
  times per job: 14% of the job process's samples. Ours returns `JSONSerializer` as it is.
- `rq.utils.utcparse` parses every timestamp of a job hash with `datetime.strptime`
  (about 8 us each, five per `Job.restore`): 10% of the samples. Ours parses RQ's own
  format (`utcformat`: microseconds and a Z, always 27 characters) with `fromisoformat`.
- `rq.utils.utcformat` writes them with `strftime` (1.8 us; the fields in an f-string: 1.0),
  and `rq.utils.current_timestamp`, whole UTC seconds for the registries' scores, builds a
  datetime and a time tuple for `calendar.timegm` (2.5 us; `int(time.time())`: 0.1). A job
  process calls them about a dozen times per job, a submission about five: together 3-5% of
  a job process's samples on a drain.

Anything else goes to RQ's own function. `install()` is called by the web app and by our
workers, once per process; stock RQ processes are untouched.
"""

from __future__ import annotations

import importlib
import time
from datetime import datetime, timezone
from typing import Any

import rq.serializers
import rq.utils
from rq.serializers import JSONSerializer, Serializer

RQ_RESOLVE_SERIALIZER = rq.serializers.resolve_serializer
RQ_UTCPARSE = rq.utils.utcparse
RQ_UTCFORMAT = rq.utils.utcformat
RQ_CURRENT_TIMESTAMP = rq.utils.current_timestamp
MODULES_USING_RESOLVE_SERIALIZER = (
    "rq.serializers", "rq.job", "rq.queue", "rq.registry", "rq.results", "rq.worker.base", "rq.scheduler",
)
MODULES_USING_UTCPARSE = ("rq.utils", "rq.scheduler")  # rq.utils.str_to_date looks it up in rq.utils
MODULES_USING_UTCFORMAT = ("rq.utils", "rq.job", "rq.worker.base", "rq.scheduler", "rq.rate_limit")
# Not rq.cron: no process of ours uses it, and importing it would load croniter and dateutil into
# every one. A module imported after `install()` takes the fast functions from rq.utils anyway.
MODULES_USING_CURRENT_TIMESTAMP = ("rq.utils", "rq.executions", "rq.registry", "rq.scheduler", "rq.rate_limit")


def resolve_serializer(serializer: Serializer | str | None = None) -> Any:
    """RQ's `resolve_serializer`, without the Protocol check for the serializer we pass."""
    if serializer is JSONSerializer:
        return JSONSerializer
    return RQ_RESOLVE_SERIALIZER(serializer)


def utcparse(string: str) -> datetime:
    """RQ's `utcparse`, with `fromisoformat` for the format RQ writes ("...T05:10:20.002364Z")."""
    if len(string) == 27 and string[10] == "T" and string[19] == "." and string[26] == "Z":
        try:
            return datetime.fromisoformat(string[:26]).replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    return RQ_UTCPARSE(string)


def utcformat(moment: datetime) -> str:
    """RQ's `utcformat` ("%Y-%m-%dT%H:%M:%S.%fZ" of the time as given), from the fields.
    Years below 1000 go to RQ's: how `strftime` pads them depends on the platform."""
    if moment.year < 1000:
        return RQ_UTCFORMAT(moment)
    return (
        f"{moment.year}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:{moment.minute:02d}:"
        f"{moment.second:02d}.{moment.microsecond:06d}Z"
    )


def current_timestamp() -> int:
    """RQ's `current_timestamp`: the whole seconds of UTC now (the epoch is UTC)."""
    return int(time.time())


def install() -> None:
    """Point RQ's modules at the functions above. Only names still bound to RQ's own
    functions are replaced, so a newer RQ that moved things keeps working, merely slower."""
    for names, ours, theirs in (
        (MODULES_USING_RESOLVE_SERIALIZER, resolve_serializer, RQ_RESOLVE_SERIALIZER),
        (MODULES_USING_UTCPARSE, utcparse, RQ_UTCPARSE),
        (MODULES_USING_UTCFORMAT, utcformat, RQ_UTCFORMAT),
        (MODULES_USING_CURRENT_TIMESTAMP, current_timestamp, RQ_CURRENT_TIMESTAMP),
    ):
        for name in names:
            module = importlib.import_module(name)
            attribute = theirs.__name__
            if getattr(module, attribute, None) is theirs:
                setattr(module, attribute, ours)
