"""One pub/sub listener per web process, waking the requests that wait on a task.

A thousand open streams must not mean a thousand Redis connections, so each web process
holds ONE PubSub connection (PSUBSCRIBE `trustcard:task:*`) in a background thread (a
greenlet under gunicorn's gevent worker), started by the first request that waits. It
hands each message to the waiters registered for that task id.

No wake-up is lost: a waiter registers, and the listener is subscribed, before the
request reads the task's state; whatever is published after that read reaches it.
When the listener's connection breaks (Redis restarted, a network fault), the messages
published meanwhile are gone: every waiter is woken with `broken` set, so that it answers
503 (or closes its stream, which the client resumes with Last-Event-ID), and the listener
connects again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from trustcard.connections import REDIS_DOWN_ERRORS, WEB_CONNECT_TIMEOUT_SECONDS, redis_client
from trustcard.exceptions import QueueUnavailable
from trustcard.task_events import CHANNEL_PATTERN, task_id_of

if TYPE_CHECKING:
    from flask import Flask
    from redis import Redis
    from redis.client import PubSub

    from trustcard.config import Settings

log = logging.getLogger(__name__)

SUBSCRIBE_WAIT_SECONDS = 2.0
"""How long a request waits for the listener to be subscribed before it answers 503."""
POLL_SECONDS = 1.0
"""How long the listener blocks on its socket between looks at whether it should stop."""
RECONNECT_DELAY_SECONDS = 0.5
LISTENER_SOCKET_TIMEOUT_SECONDS = 5.0
LISTENER_HEALTH_CHECK_SECONDS = 5
"""The listener PINGs on a quiet connection this often, so a dead one is noticed."""
UNAVAILABLE_MESSAGE = "The task queue (Redis) is unreachable for task events; try again shortly."


class Waiter:
    """One request's interest in one task: woken on each of its messages."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.broken = False
        self._event = threading.Event()
        self._messages: list[str] = []
        self._lock = threading.Lock()

    def notify(self, message: str) -> None:
        with self._lock:
            self._messages.append(message)
        self._event.set()

    def break_off(self) -> None:
        """The listener lost its connection: what was published meanwhile is lost."""
        self.broken = True
        self._event.set()

    def wait(self, timeout: float) -> list[str]:
        """The messages that came within `timeout` seconds ([] if none came). Raises
        `QueueUnavailable` when the listener lost Redis, rather than waiting on for ever."""
        self._event.wait(max(timeout, 0.0))
        if self.broken:
            raise QueueUnavailable(UNAVAILABLE_MESSAGE)
        with self._lock:
            messages, self._messages = self._messages, []
            self._event.clear()
        return messages


class EventHub:
    """The web process's listener and its registry of waiters, by task id."""

    def __init__(self, connect: Callable[[], Redis]) -> None:
        self._connect = connect
        self._waiters: dict[str, set[Waiter]] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False

    @contextmanager
    def waiting(self, task_id: str) -> Iterator[Waiter]:
        """Register a waiter for `task_id` for the block's duration; read the task's state
        inside the block, after this returned. 503 when the listener cannot subscribe."""
        waiter = self.register(task_id)
        try:
            yield waiter
        finally:
            self.unregister(waiter)

    def register(self, task_id: str) -> Waiter:
        """A registered waiter (the caller must `unregister` it); see `waiting`."""
        self._ensure_listening()
        waiter = Waiter(task_id)
        with self._lock:
            self._waiters.setdefault(task_id, set()).add(waiter)
        if not self._subscribed.is_set():  # the connection broke just now: nothing is promised
            self.unregister(waiter)
            raise QueueUnavailable(UNAVAILABLE_MESSAGE)
        return waiter

    def unregister(self, waiter: Waiter) -> None:
        with self._lock:
            waiters = self._waiters.get(waiter.task_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[waiter.task_id]

    @property
    def waiter_count(self) -> int:
        with self._lock:
            return sum(len(waiters) for waiters in self._waiters.values())

    def stop(self) -> None:
        """Stop the listener (tests; a web process simply exits)."""
        self._stopping = True
        if self._thread is not None:
            self._thread.join(POLL_SECONDS * 3)

    def _ensure_listening(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._listen, name="trustcard-event-hub", daemon=True)
                self._thread.start()
        if not self._subscribed.wait(SUBSCRIBE_WAIT_SECONDS):
            raise QueueUnavailable(UNAVAILABLE_MESSAGE)

    def _listen(self) -> None:
        """Subscribe, deliver, and on a Redis error break off every waiter and start over."""
        while not self._stopping:
            pubsub: PubSub | None = None
            try:
                pubsub = self._connect().pubsub()
                pubsub.psubscribe(CHANNEL_PATTERN)
                self._confirm(pubsub)
                self._subscribed.set()
                log.info("event hub: listening on %s", CHANNEL_PATTERN)
                while not self._stopping:
                    message = pubsub.get_message(timeout=POLL_SECONDS)
                    if message is not None:
                        self._deliver(message)
            except (RedisError, *REDIS_DOWN_ERRORS) as error:
                log.warning("event hub: Redis connection lost (%s); reconnecting", error)
            except Exception:  # noqa: BLE001 - the listener must outlive any one bad message
                log.exception("event hub: listener failed; restarting it")
            finally:
                self._break_off_all()
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001 - closing a broken connection
                        pass
            if not self._stopping:
                time.sleep(RECONNECT_DELAY_SECONDS)

    def _confirm(self, pubsub: PubSub) -> None:
        """Wait for Redis to confirm the PSUBSCRIBE: only then is nothing missed."""
        deadline = time.monotonic() + SUBSCRIBE_WAIT_SECONDS
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=POLL_SECONDS)
            if message is not None and message.get("type") == "psubscribe":
                return
        raise TimeoutError("Redis did not confirm the subscription")

    def _deliver(self, message: dict[str, Any]) -> None:
        if message.get("type") != "pmessage":
            return
        task_id = task_id_of(message.get("channel") or b"")
        if task_id is None:
            return
        data = message.get("data")
        text = data.decode() if isinstance(data, bytes) else str(data)
        with self._lock:
            waiters = list(self._waiters.get(task_id, ()))
        for waiter in waiters:
            waiter.notify(text)

    def _break_off_all(self) -> None:
        self._subscribed.clear()
        with self._lock:
            waiters = [waiter for group in self._waiters.values() for waiter in group]
        for waiter in waiters:
            waiter.break_off()


def listener_redis(settings: Settings) -> Redis:
    """The listener's own client: no silent retry, since redis-py would resubscribe on a
    new connection and hide the gap in which messages were lost; quick to connect."""
    return redis_client(
        settings,
        socket_connect_timeout=WEB_CONNECT_TIMEOUT_SECONDS,
        socket_timeout=LISTENER_SOCKET_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), retries=0),
        health_check_interval=LISTENER_HEALTH_CHECK_SECONDS,
    )


def init_app(app: Flask, settings: Settings, redis: Redis | None = None) -> None:
    """The process's hub; its listener starts with the first request that waits. Given a
    ready `redis` (fakeredis in unit tests), the listener uses that."""
    connect = (lambda: redis) if redis is not None else (lambda: listener_redis(settings))
    app.extensions["trustcard.events"] = EventHub(connect)
