"""An analysis's Callback-URL: once it has ended, its final view is POSTed there, signed.

The end is claimed once, in the row, under its lock (the callback state goes from None to
pending); whoever claims it enqueues the delivery job (`workers.analysis_webhooks`), which
signs and sends as task deliveries do and writes each attempt's outcome into the row.
"""

from __future__ import annotations

import uuid

from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer
from sqlalchemy import Engine

from trustcard.analyses import records
from trustcard.callbacks import DELIVERY_FAILURE_TTL, CallbackState, delivery_retry
from trustcard.catalogue import ANALYSIS_DELIVERY
from trustcard.models import Analysis

ENDED = ("completed", "failed", "cancelled")


def _claim(row: Analysis, entries: records.StageEntries) -> str | None:
    if row.callback_url is None or row.status not in ENDED or row.callback is not None:
        return None
    row.callback = CallbackState(row.callback_url).to_dict()
    return row.callback_url


def deliver_if_ended(engine: Engine, connection: Redis, analysis_id: str) -> bool:
    """Enqueue the delivery of an analysis that has ended, once; True when this call did."""
    url = records.change(engine, analysis_id, _claim)
    if url is None:
        return False
    queue = Queue(ANALYSIS_DELIVERY.queue, connection=connection, serializer=JSONSerializer)
    queue.enqueue_call(
        ANALYSIS_DELIVERY.function,
        kwargs={"analysis_id": analysis_id, "url": url},
        timeout=ANALYSIS_DELIVERY.soft_timeout,
        result_ttl=ANALYSIS_DELIVERY.result_ttl,
        failure_ttl=DELIVERY_FAILURE_TTL,
        meta={"job_type": ANALYSIS_DELIVERY.name, "hard_timeout": ANALYSIS_DELIVERY.hard_timeout},
        retry=delivery_retry(),
        job_id=str(uuid.uuid4()),
    )
    return True
