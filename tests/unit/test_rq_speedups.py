"""`trustcard.rq_speedups`: RQ's serializer lookup and timestamp helpers, cheaper, with RQ's
behaviour kept."""

from __future__ import annotations

import calendar
import importlib
import pickle
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from rq.serializers import JSONSerializer
from rq.utils import now, str_to_date, utcformat

from tests.support.paths import ROOT
from trustcard import rq_speedups


def test_every_rq_module_using_them_gets_the_fast_ones() -> None:
    rq_speedups.install()
    for name in rq_speedups.MODULES_USING_RESOLVE_SERIALIZER:
        assert importlib.import_module(name).resolve_serializer is rq_speedups.resolve_serializer, name
    for name in rq_speedups.MODULES_USING_UTCPARSE:
        assert importlib.import_module(name).utcparse is rq_speedups.utcparse, name
    for name in rq_speedups.MODULES_USING_UTCFORMAT:
        assert importlib.import_module(name).utcformat is rq_speedups.utcformat, name
    for name in rq_speedups.MODULES_USING_CURRENT_TIMESTAMP:
        assert importlib.import_module(name).current_timestamp is rq_speedups.current_timestamp, name


def test_install_loads_no_rq_module_our_processes_do_not_use() -> None:
    """rq.cron would bring croniter and dateutil into every web and worker process."""
    code = "import sys; from trustcard import rq_speedups; rq_speedups.install(); print('rq.cron' in sys.modules)"
    answer = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert answer.stdout.strip() == "False"


def test_install_twice_changes_nothing() -> None:
    rq_speedups.install()
    rq_speedups.install()
    assert importlib.import_module("rq.job").resolve_serializer is rq_speedups.resolve_serializer


@pytest.mark.parametrize("given", [JSONSerializer, "json", "rq.serializers.JSONSerializer"])
def test_json_resolves_as_rq_resolves_it(given: object) -> None:
    assert rq_speedups.resolve_serializer(given) is rq_speedups.RQ_RESOLVE_SERIALIZER(given)  # type: ignore[arg-type]


def test_the_default_is_still_rqs_pickle() -> None:
    assert rq_speedups.resolve_serializer(None).loads(pickle.dumps({"a": 1})) == {"a": 1}


def test_something_that_is_no_serializer_is_still_refused() -> None:
    with pytest.raises(NotImplementedError):
        rq_speedups.resolve_serializer(object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-29T05:10:20.002364Z",  # what RQ writes
        "2026-11-29T05:10:20.000000Z",
        "1999-12-31T23:59:59.999999Z",
        "2026-11-29T05:10:20Z",  # RQ's older format, without microseconds
        "2026-11-29T05:10:20.5Z",  # fewer digits: strptime's %f takes them
    ],
)
def test_timestamps_parse_exactly_as_rq_parses_them(text: str) -> None:
    ours, theirs = rq_speedups.utcparse(text), rq_speedups.RQ_UTCPARSE(text)
    assert ours == theirs and ours.tzinfo == theirs.tzinfo == timezone.utc


@pytest.mark.parametrize("text", ["2026-13-29T05:10:20.002364Z", "2026-11-29 05:10:20.002364Z", "not a date"])
def test_what_rq_refuses_is_still_refused(text: str) -> None:
    with pytest.raises(ValueError):
        rq_speedups.RQ_UTCPARSE(text)
    with pytest.raises(ValueError):
        rq_speedups.utcparse(text)


def test_rqs_own_round_trip_goes_through_the_fast_path() -> None:
    rq_speedups.install()
    moment = datetime(2026, 11, 29, 5, 10, 20, 2364, tzinfo=timezone.utc)
    assert str_to_date(utcformat(moment).encode()) == moment


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 29, 5, 10, 20, 2364, tzinfo=timezone.utc),
        datetime(2026, 1, 2, 3, 4, 5, 0, tzinfo=timezone.utc),  # every field one digit, no microseconds
        datetime(1999, 12, 31, 23, 59, 59, 999999),  # naive, as older RQ stored them
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
        datetime(2026, 6, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=2))),  # written as given, not converted
        datetime(999, 1, 1, 0, 0, 0, 5),  # below 1000: RQ's own strftime
        datetime(1, 1, 1),
    ],
)
def test_timestamps_are_written_exactly_as_rq_writes_them(moment: datetime) -> None:
    assert rq_speedups.utcformat(moment) == rq_speedups.RQ_UTCFORMAT(moment)


def test_the_current_timestamp_is_rqs_whole_utc_seconds() -> None:
    before = calendar.timegm(now().utctimetuple())
    ours = rq_speedups.current_timestamp()
    after = rq_speedups.RQ_CURRENT_TIMESTAMP()
    assert before <= ours <= after and isinstance(ours, int)
