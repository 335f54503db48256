"""The web processes' periodic pass over analyses nobody reads whose next stage was never queued.

The API's read of an analysis queues such a stage (`stranded.queue_if_stranded`); an analysis
whose client waits for its Callback-URL is never read. So each web process (gunicorn's
`post_worker_init`, gunicorn.conf.py) runs `StrandedCheck` every `CHECK_SECONDS` in a
background thread (a greenlet under the gevent worker), one web process at a time across the
deployment (the settling lock under its own name).

Why the web and not the workers: the web holds the database layer anyway, for the analyses
API. In a worker's supervisor the same check imported SQLAlchemy and the models (about 23 MB
a worker, for workers that may never run an analysis stage), and made the loop that enforces
the hard time limits and sends the heartbeats wait on a database that may not answer.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from trustcard.analyses.stranded import StrandedCheck
from trustcard.connections import REDIS_UNAVAILABLE
from trustcard.settling import settling

if TYPE_CHECKING:
    from flask import Flask
    from redis import Redis
    from sqlalchemy import Engine

    from trustcard.config import Settings

log = logging.getLogger(__name__)

CHECK_SECONDS = 15.0
"""How often each web process offers to run the check (one of them gets the lock)."""
LOCK_NAME = "stranded-analyses"


class StrandedWatch:
    """One web process's side of the check: its place in the rows, and its thread."""

    def __init__(self, engine: Engine, connection: Redis, settings: Settings) -> None:
        self.engine = engine
        self.connection = connection
        self.settings = settings
        self.check = StrandedCheck()
        self._last_failure: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> list[str]:
        """One batch, if no other process runs the check now; the ids of the analyses queued.
        A database or a Redis that fails skips this round, said in one line (once while the
        same failure repeats, every 15 s, so a database not migrated yet does not fill the
        log): never raises."""
        try:
            with settling(self.connection, LOCK_NAME) as ours:
                if not ours:
                    return []
                queued = self.check.run(self.engine, self.connection, result_ttl=self.settings.result_ttl,
                                        failure_ttl=self.settings.failure_ttl)
        except SQLAlchemyError as error:
            self._skipped(f"the database failed ({_first_line(error)})")
        except (*REDIS_UNAVAILABLE, RedisError) as error:
            self._skipped(f"Redis failed ({_first_line(error)})")
        except Exception as error:  # noqa: BLE001 - the thread must outlive any one round
            self._skipped(f"it failed ({type(error).__name__}: {_first_line(error)})", traceback=True)
        else:
            self._last_failure = None
            return queued
        return []

    def _skipped(self, why: str, traceback: bool = False) -> None:
        repeated = why == self._last_failure
        log.log(logging.DEBUG if repeated else logging.WARNING, "stranded-analysis check skipped, %s", why,
                exc_info=traceback and not repeated)
        self._last_failure = why

    def start(self, interval: float = CHECK_SECONDS) -> None:
        """The check now, then every `interval` seconds, in a daemon thread of this process."""
        self._thread = threading.Thread(target=self._run, args=(interval,), name="trustcard-stranded-analyses",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(interval)


def start_in(app: Flask) -> StrandedWatch:
    """Start the check in this web process, on the app's own engine, Redis client and settings."""
    watch = StrandedWatch(app.extensions["trustcard.engine"], app.extensions["trustcard.redis"],
                          app.config["TRUSTCARD_SETTINGS"])
    app.extensions["trustcard.stranded_watch"] = watch
    watch.start()
    return watch


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
