"""The chaos soak's traffic: mixed submissions and cancels through the HTTP API, each accepted
one recorded with what it must end as.

Only a 202 (or a 200 for an analysis already under way) is an accepted task; a 503, a 429 or a
connection refused while a fault is on is counted as refused, and the client goes on.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support.http_connection import KeepAliveConnection
from workers.stages import STAGE_NAMES

ANY = object()
"""Expected "result" of a task whose only right end is failed (test.fail)."""
LONG_RESULT = {"status": "completed", "progress": list(STAGE_NAMES), "percent": 100}
ACTIONS = {
    "tally": 32, "add": 12, "sleep": 8, "long": 3, "fail": 8, "batch": 5, "cancel": 9,
    "analysis": 10, "cancel_analysis": 2,
}
"""Relative weights of what a client does next: about half a second of work per action, so
that the default rate keeps three workers busy two thirds of the time, faults included (a
soak past its capacity only measures its backlog)."""
CANCEL_KINDS = ("sleep", "long", "tally")
"""Tasks that run long enough to be caught queued or running by a cancel."""


@dataclass
class Accepted:
    """One accepted task or analysis and what it must end as."""

    id: str
    kind: str
    expected: Any
    """The result a completed end must have; `ANY` for test.fail (which must not complete)."""
    accepted_at: float
    """time.time() of the 202."""
    cancelled: bool = False
    """A DELETE answered 200: it must end cancelled."""
    cancel_unanswered: str | None = None
    """A DELETE answered this instead (a 503, "no answer") while a fault was on."""

    @property
    def is_analysis(self) -> bool:
        return self.kind == "analysis"


@dataclass
class Traffic:
    """Clients that submit and cancel at about `rate` requests per second until `stop` is set."""

    url: str
    rate: float
    rng_seed: int
    say: Callable[[str], None]
    clients: int = 4
    accepted: list[Accepted] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    """Every answer by what it was: 202, 503, "connection error", ..."""
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, duration: float) -> None:
        """Run the clients for `duration` seconds (or until `stop`), then return."""
        deadline = time.monotonic() + duration
        threads = [threading.Thread(target=self._client, args=(number, deadline), daemon=True)
                   for number in range(self.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _client(self, number: int, deadline: float) -> None:
        rng = random.Random(self.rng_seed * 1000 + number)
        parsed = urllib.parse.urlsplit(self.url)
        connection = KeepAliveConnection(parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=15)
        names, weights = list(ACTIONS), list(ACTIONS.values())
        pause = self.clients / self.rate
        while time.monotonic() < deadline and not self.stop.is_set():
            action = rng.choices(names, weights)[0]
            try:
                getattr(self, f"_{action}")(connection, rng)
            except (OSError, http.client.HTTPException, ValueError) as error:
                self._count("connection error" if isinstance(error, OSError) else type(error).__name__)
                connection.close()
            self.stop.wait(rng.uniform(0.5, 1.5) * pause)
        connection.close()

    # --- submissions -----------------------------------------------------------------------

    def _submit(self, connection: KeepAliveConnection, kind: str, path: str, expected: Any) -> None:
        status, body = connection.request_json("POST", path)
        self._count(str(status))
        if status == 202:
            self._accept(Accepted(body["task_id"], kind, expected, time.time()))

    def _tally(self, connection: KeepAliveConnection, rng: random.Random) -> None:
        x = rng.randrange(1000)
        seconds = rng.choice((0, 0, 0, 0, 0.5, 1, 2))
        self._submit(connection, "tally", f"/tasks/test/tally?x={x}&seconds={seconds}", {"x": x, "twice": 2 * x})

    def _add(self, connection: KeepAliveConnection, rng: random.Random) -> None:
        x, y = rng.randrange(1000), rng.randrange(1000)
        self._submit(connection, "add", f"/tasks/test/add?x={x}&y={y}", x + y)

    def _sleep(self, connection: KeepAliveConnection, rng: random.Random) -> None:
        seconds = rng.choice((1, 2))
        self._submit(connection, "sleep", f"/tasks/test/sleep?seconds={seconds}", f"Slept for {seconds} seconds")

    def _long(self, connection: KeepAliveConnection, rng: random.Random) -> None:
        self._submit(connection, "long", "/tasks/test/long", LONG_RESULT)

    def _fail(self, connection: KeepAliveConnection, rng: random.Random) -> None:
        self._submit(connection, "fail", f"/tasks/test/fail?message=chaos-{rng.randrange(10**6)}", ANY)

    def _batch(self, connection: KeepAliveConnection, rng: random.Random) -> None:
        tasks, expected = [], []
        for _ in range(rng.randint(2, 8)):
            x, y = rng.randrange(1000), rng.randrange(1000)
            if rng.random() < 0.5:
                tasks.append({"type": "test.add", "params": {"x": x, "y": y}})
                expected.append(("add", x + y))
            else:
                tasks.append({"type": "test.tally", "params": {"x": x}})
                expected.append(("tally", {"x": x, "twice": 2 * x}))
        status, body = connection.request_json("POST", "/tasks/batch", {"tasks": tasks})
        self._count(f"{status} (batch)")
        if status == 202:
            now = time.time()
            for view, (kind, result) in zip(body["tasks"], expected, strict=True):
                self._accept(Accepted(view["task_id"], kind, result, now))

    def _analysis(self, connection: KeepAliveConnection, rng: random.Random) -> None:
        url = f"https://www.instagram.com/p/C{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}/"
        status, body = connection.request_json("POST", "/analyses", {"url": url})
        self._count(f"{status} (analysis)")
        if status in (200, 202):
            self._accept(Accepted(body["id"], "analysis", url, time.time()))

    # --- cancels ---------------------------------------------------------------------------

    def _cancel(self, connection: KeepAliveConnection, rng: random.Random) -> None:
        self._cancel_one(connection, rng, lambda task: task.kind in CANCEL_KINDS, "/tasks/")

    def _cancel_analysis(self, connection: KeepAliveConnection, rng: random.Random) -> None:
        self._cancel_one(connection, rng, lambda task: task.is_analysis, "/analyses/")

    def _cancel_one(
        self, connection: KeepAliveConnection, rng: random.Random, fits: Callable[[Accepted], bool], prefix: str
    ) -> None:
        with self._lock:
            recent = [task for task in self.accepted[-40:] if fits(task) and not task.cancelled]
        if not recent:
            return
        task = rng.choice(recent)
        try:
            status, _ = connection.request_json("DELETE", prefix + task.id)
        except (OSError, http.client.HTTPException):
            task.cancel_unanswered = "no answer"  # the web died mid-request: it may have cancelled
            self.say(f"cancel of {task.kind} {task.id} got no answer")
            raise
        self._count(f"{status} (cancel)")
        if status == 200:
            task.cancelled = True
            self.say(f"cancelled {task.kind} {task.id}")
        elif status >= 500:
            task.cancel_unanswered = str(status)
            self.say(f"cancel of {task.kind} {task.id} answered {status}")

    # --- bookkeeping -----------------------------------------------------------------------

    def _accept(self, task: Accepted) -> None:
        with self._lock:
            self.accepted.append(task)
        self.say(f"accepted {task.kind} {task.id}")

    def _count(self, answer: str) -> None:
        with self._lock:
            self.answers[answer] += 1
