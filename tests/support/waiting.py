"""Waiting for a condition by polling it, never by sleeping a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class TimedOut(AssertionError):
    """A condition did not hold in time (an AssertionError, so pytest reports it as a failure)."""


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.05,
    ignore: tuple[type[BaseException], ...] = (),
) -> Any:
    """Poll `condition` until it returns something truthy, and return that; raise `TimedOut`
    naming `what` after `timeout` seconds. Exceptions of the `ignore` types count as "not yet"
    (a server that is still starting refuses connections)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except ignore:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimedOut(f"timed out after {timeout:g} s: {what}")
        time.sleep(interval)
