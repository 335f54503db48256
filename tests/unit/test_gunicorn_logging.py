"""The web's access logger writes gunicorn's own lines, atom for atom, for less work.

Each case formats the same request with gunicorn's stock `Logger` and with ours, through
the installed gunicorn's `SafeAtoms` wrapper, and compares the lines.
"""

from __future__ import annotations

import datetime
import runpy
from pathlib import Path
from typing import Any

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from trustcard.gunicorn_logging import AccessLogger

ROOT = Path(__file__).resolve().parents[2]
PROJECT_FORMAT = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["access_log_format"]
EVERY_ATOM = " ".join(f"%({name})s" for name in "hlutrsmUqHbBfaTDMLp") + " %({user-agent}i)s %({PATH_INFO}e)s"


class Response:
    def __init__(self, headers: list[tuple[str, str]], sent: int | None) -> None:
        self.status = "202 ACCEPTED"
        self.headers = headers
        self.sent = sent


class Request:
    def __init__(self, headers: list[tuple[str, str]]) -> None:
        self.headers = headers


def environ(**extra: str) -> dict[str, Any]:
    return {
        "REMOTE_ADDR": "10.1.2.3", "REQUEST_METHOD": "POST", "RAW_URI": '/tasks/test/add?x=1&y="2"',
        "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/tasks/test/add", "QUERY_STRING": 'x=1&y="2"', **extra,
    }


def line(logger_class: type[Logger], log_format: str, resp: Response, req: Request, env: dict[str, Any]) -> str:
    cfg = Config()
    cfg.set("access_log_format", log_format)
    logger = logger_class(cfg)
    logger.now = lambda: "[02/Dec/2026:19:00:00 +0000]"  # type: ignore[method-assign]
    atoms = logger.atoms_wrapper_class(logger.atoms(resp, req, env, datetime.timedelta(seconds=1, microseconds=2345)))
    return log_format % atoms


CASES = {
    "the project's format": (PROJECT_FORMAT, [("X-Request-Id", "abc123abc123abc123abc123")], 57,
                             environ(HTTP_USER_AGENT='curl "quoted"', HTTP_REFERER="https://example.org/")),
    "no request id sent back, no agent": (PROJECT_FORMAT, [("Content-Type", "application/json")], 57, environ()),
    "every atom": (EVERY_ATOM, [("Content-Length", "57")], None,
                   environ(HTTP_USER_AGENT="ua", HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz")),
    "a header named in capitals, sent twice": ("%({X-Request-Id}o)s", [("X-Request-Id", "a"), ("x-request-id", "b")],
                                               1, environ()),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_access_line_is_gunicorns_own(case: str) -> None:
    log_format, response_headers, sent, env = CASES[case]
    resp, req = Response(response_headers, sent), Request([("User-Agent", env.get("HTTP_USER_AGENT", "-"))])
    assert line(AccessLogger, log_format, resp, req, env) == line(Logger, log_format, resp, req, env)


def test_only_the_formats_atoms_are_built() -> None:
    cfg = Config()
    cfg.set("access_log_format", PROJECT_FORMAT)
    atoms = AccessLogger(cfg).atoms(Response([("X-Request-Id", "r" * 20)], 3), Request([]), environ(),
                                    datetime.timedelta(0))
    assert set(atoms) == {"h", "l", "u", "t", "r", "s", "b", "f", "a", "{x-request-id}o"}


def test_the_time_is_gunicorns_format() -> None:
    cfg = Config()
    ours, stock = AccessLogger(cfg).now(), Logger(cfg).now()
    parsed = [datetime.datetime.strptime(stamp, "[%d/%b/%Y:%H:%M:%S %z]") for stamp in (ours, stock)]
    assert abs((parsed[1] - parsed[0]).total_seconds()) <= 1  # the same format, a second apart at most


def test_gunicorn_conf_names_the_logger() -> None:
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["logger_class"] == "trustcard.gunicorn_logging.AccessLogger"
