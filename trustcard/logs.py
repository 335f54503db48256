"""Log lines that one search follows from the router to the worker.

Every line written while a request or a job is being handled carries that task's id, the
request id the router gave it, and the client it came from, whichever process writes it.
They live in context variables (set by the web per request and by the worker per job), so
no call site passes them along. `LOG_FORMAT=text` (the default) prints them as a bracket
before the message; `LOG_FORMAT=json` prints one JSON object per line for log platforms.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from trustcard.config import Settings

CONTEXT_FIELDS = ("task_id", "request_id", "client")
_context: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(f"trustcard_log_{name}", default=None) for name in CONTEXT_FIELDS
}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(log_context)s%(message)s"


def bind(**values: str | None) -> None:
    """Set context fields for what this thread or task logs from now on (None clears one)."""
    for name, value in values.items():
        _context[name].set(value)


@contextmanager
def bound(**values: str | None) -> Iterator[None]:
    """Context fields for the lines logged inside the block, restored after it."""
    tokens = [(_context[name], _context[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


class ContextFilter(logging.Filter):
    """Puts the context fields on every record (and a ready `log_context` text for TEXT_FORMAT)."""

    def filter(self, record: logging.LogRecord) -> bool:
        shown = []
        for name, variable in _context.items():
            value = variable.get()
            if not hasattr(record, name):
                setattr(record, name, value)
            if value:
                shown.append(f"{name}={value}")
        record.log_context = f"[{' '.join(shown)}] " if shown else ""
        return True


class TextFormatter(logging.Formatter):
    """`TEXT_FORMAT`, its time formatted once a second rather than on every line (a worker
    writes two lines a job), the same text as `logging.Formatter`'s."""

    _second: int = -1
    _stamp: str = ""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
            self._second = second
        return self.default_msec_format % (self._stamp, record.msecs)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context fields, any exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            entry[name] = getattr(record, name, None)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter_for(log_format: str) -> logging.Formatter:
    return JSONFormatter() if log_format == "json" else TextFormatter()


def configure_logging(settings: Settings, stream: Any = None) -> None:
    """Entry points only (wsgi, the worker's settings module): one handler on the root
    logger, INFO and up. RQ then adds no handlers of its own, so its lines, ours and the
    job code's all come out in the one format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter_for(settings.log_format))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_trustcard", False)]:
        root.removeHandler(old)
    handler._trustcard = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    _skip_unused_record_fields()


def _skip_unused_record_fields() -> None:
    """Neither format shows where a line was logged from, nor the thread or process: logging
    is told not to look them up (the logging HOWTO's "Optimization"). Finding the caller walks
    the stack on every line; with the rest, it was about a tenth of the time of a worker's two
    lines per job."""
    logging._srcfile = None  # type: ignore[attr-defined]  # the documented switch; no public one
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def redacted_url(url: str) -> str:
    """`url` without its password, for log lines."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
