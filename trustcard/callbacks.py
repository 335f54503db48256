"""A task's callback: its stored state, its delivery job, and the signature of what is sent.

The state is a field of the task's job hash (`CALLBACK_FIELD`), beside the cancel flag,
so the status read stays one round trip; the URL is also kept in the job's meta
(`CALLBACK_META_KEY`), which every process that ends a task has already loaded: that is
how `delivery_commands`, called with every end, knows there is something to deliver
without asking Redis. Its commands (the state back to pending and the delivery job
enqueued on the `webhooks` queue) run in the same atomic Redis call as the end itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import uuid
from dataclasses import asdict, dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from rq import Queue
from rq.job import Job, Retry
from rq.serializers import JSONSerializer

from trustcard.catalogue import WEBHOOK_DELIVERY
from trustcard.command_recording import CommandRecorder

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

CALLBACK_FIELD = "trustcard_callback"
"""Hash field on the task's job key: the callback state as JSON."""
CALLBACK_META_KEY = "callback_url"
SIGNATURE_HEADER = "TrustCard-Signature"
DELIVERY_FAILURE_TTL = 604_800
"""How long a delivery job that gave up is kept (the default FAILURE_TTL)."""

_SET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return -1
"""


class CallbackStatus(str, Enum):
    PENDING = "pending"
    RETRYING = "retrying"
    DELIVERED = "delivered"
    FAILED = "failed"
    """Gave up: every attempt failed."""


@dataclass(frozen=True)
class CallbackState:
    """What the task's view says about its callback."""

    url: str
    status: str = CallbackStatus.PENDING.value
    attempts: int = 0
    last_error: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_state(raw: dict[bytes, bytes]) -> dict[str, Any] | None:
    """The callback state from a job hash as HGETALL returns it; None without a callback."""
    value = raw.get(CALLBACK_FIELD.encode())
    if value is None:
        return None
    try:
        state = json.loads(value)
        return CallbackState(**state).to_dict()
    except (ValueError, TypeError):
        log.warning("unreadable callback state %r", value[:200])
        return None


def save_state(connection: Redis, job_key: str, state: CallbackState) -> bool:
    """Write `state` on the task's hash, unless the task has expired meanwhile (it must not
    come back as a hash without a lifetime). Returns whether it was written."""
    return int(connection.eval(_SET_IF_EXISTS, 1, job_key, CALLBACK_FIELD, state.to_json())) >= 0


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """`t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: a receiver recomputes it with the
    shared secret, compares in constant time and refuses an old `t` (replays)."""
    signed = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class TextDataJob(Job):
    """A job whose arguments are stored as JSON text, not zlib-compressed: its commands must
    travel as JSON into a Lua script. Every RQ reader takes uncompressed data as it is."""

    def to_dict(self, include_meta: bool = True, include_result: bool = True) -> dict[str, Any]:
        stored = super().to_dict(include_meta=include_meta, include_result=include_result)
        stored["data"] = self.data
        return stored


class JSONCommandRecorder(CommandRecorder):
    """Keeps each command's words as JSON can carry them: they travel as JSON into a script."""

    def kept(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(_as_text(arg) for arg in args)


def _as_text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (str, int)):
        return value
    raise TypeError(f"cannot send {type(value).__name__} {value!r} as a command argument")


def delivery_retry() -> Retry:
    return Retry(max=WEBHOOK_DELIVERY.retries, interval=list(WEBHOOK_DELIVERY.retry_backoff))


def delivery_commands(job: Job) -> list[tuple[Any, ...]]:
    """The commands that start delivering `job`'s final view, run with its end: [] when it
    has no callback. The delivery job is made by RQ's own `enqueue_call`, recorded."""
    meta = job.meta or {}
    url = meta.get(CALLBACK_META_KEY)
    if not isinstance(url, str):
        return []
    delivery = WEBHOOK_DELIVERY
    recorder = JSONCommandRecorder()
    queue = Queue(delivery.queue, connection=job.connection, serializer=JSONSerializer, job_class=TextDataJob)
    queue.enqueue_call(
        delivery.function,
        kwargs={"task_id": job.id, "url": url},
        timeout=delivery.soft_timeout,
        result_ttl=delivery.result_ttl,
        failure_ttl=DELIVERY_FAILURE_TTL,
        meta={
            "job_type": delivery.name,
            "hard_timeout": delivery.hard_timeout,
            "submitted_by": meta.get("submitted_by"),
            "request_id": meta.get("request_id"),
        },
        retry=delivery_retry(),
        job_id=str(uuid.uuid4()),
        pipeline=recorder,  # type: ignore[arg-type]
    )
    reset = ("HSET", job.key, CALLBACK_FIELD, CallbackState(url).to_json())
    return [reset, *recorder.commands]
