"""pytest plugin for an RQ contract run (`-p rq_contract_plugin`).

Marks each test listed in the expected-failures file (`RQ_CONTRACT_EXPECTED`, TOML) as a
strict xfail with its reason: a listed test that passes fails the run, so the list cannot
rot; a listed test that no longer exists fails it too. Nothing is marked when the file is
not given (the stock RQ run, which must pass everything).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import tomllib
from collections.abc import Iterator
from types import FrameType

import psutil
import pytest

TEST_TIMEOUT_SECONDS = 30.0
"""Longest a test may run: stock RQ's slowest takes a few seconds; ours may hang instead of fail."""


class TimedOut(BaseException):
    """Raised in a test that ran past `TEST_TIMEOUT_SECONDS` (a BaseException, so no worker swallows it)."""


def _on_timeout(signum: int, frame: FrameType | None) -> None:
    raise TimedOut(f"the test ran past {TEST_TIMEOUT_SECONDS:.0f} s")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Fail a hanging test instead of hanging the run, then end the processes it left behind."""
    previous = signal.signal(signal.SIGUSR2, _on_timeout)
    pid = os.getpid()
    timer = threading.Timer(TEST_TIMEOUT_SECONDS, os.kill, (pid, signal.SIGUSR2))
    timer.start()
    try:
        return (yield)
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR2, previous)
        for child in psutil.Process(pid).children(recursive=True):
            try:
                child.kill()  # a worker left running would take the next tests' jobs
            except psutil.NoSuchProcess:
                pass


def _expected() -> dict[str, str]:
    path = os.environ.get("RQ_CONTRACT_EXPECTED")
    if not path:
        return {}
    with open(path, "rb") as file:
        entries = tomllib.load(file)
    return {node_id: f"[{entry['kind']}] {entry['reason']}" for node_id, entry in entries.items()}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    expected = _expected()
    for item in items:
        reason = expected.pop(item.nodeid, None)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True, run=True))
    collected_files = {item.nodeid.split("::")[0] for item in items}
    missing = sorted(node_id for node_id in expected if node_id.split("::")[0] in collected_files)
    if missing and not config.option.keyword and not config.option.markexpr:
        raise pytest.UsageError(f"listed as expected failures but not collected: {missing}")


OUTCOMES: dict[str, str] = {}
"""Node id -> passed, failed, xfailed, xpassed (a strict xfail that passed) or skipped."""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.failed:
        text = str(report.longrepr or "")
        OUTCOMES[report.nodeid] = "xpassed" if text.startswith("[XPASS(strict)]") else "failed"
    elif report.skipped:
        OUTCOMES.setdefault(report.nodeid, "xfailed" if hasattr(report, "wasxfail") else "skipped")
    elif report.when == "call":
        OUTCOMES.setdefault(report.nodeid, "passed")


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get("RQ_CONTRACT_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as file:
            json.dump(OUTCOMES, file, indent=1, sort_keys=True)
