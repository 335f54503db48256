"""The `analyses.deliver` job: POST an ended analysis to its Callback-URL, signed.

The same attempt as a task's delivery (`workers.webhooks`): signed with WEBHOOK_SECRET,
the URL checked again at delivery, no redirects followed, a failed attempt raised so that
RQ retries it by the same back-off. Each attempt's outcome is written into the row.
"""

from __future__ import annotations

import logging
import time

from rq import get_current_job

from trustcard.analyses import records
from trustcard.analyses.view import analysis_view
from trustcard.callbacks import CallbackState, CallbackStatus
from trustcard.catalogue import ANALYSIS_DELIVERY
from trustcard.config import load_settings
from workers import storage
from workers.webhooks import DeliveryFailed, _attempt

log = logging.getLogger(__name__)

WRITE_SECONDS = 20


def deliver(analysis_id: str, url: str) -> str:
    job = get_current_job()
    retries_left = (job.retries_left or 0) if job is not None else 0
    attempt = ANALYSIS_DELIVERY.retries - retries_left + 1
    settings = load_settings()
    engine = storage.engine()
    row = records.read(engine, analysis_id)
    if row is None:
        return "analysis gone"
    try:
        outcome = _attempt(analysis_view(row), url, settings.webhook_secret, settings.webhook_allow_private)
    except DeliveryFailed as failed:
        status = CallbackStatus.FAILED if retries_left <= 0 else CallbackStatus.RETRYING
        _save(analysis_id, CallbackState(url, status.value, attempt, str(failed)))
        log.warning("webhook for analysis %s: attempt %d failed: %s", analysis_id, attempt, failed)
        raise
    _save(analysis_id, CallbackState(url, CallbackStatus.DELIVERED.value, attempt, None))
    log.info("webhook for analysis %s delivered on attempt %d: %s", analysis_id, attempt, outcome)
    return outcome


def _save(analysis_id: str, state: CallbackState) -> None:
    def apply(row: object, entries: records.StageEntries) -> None:
        row.callback = state.to_dict()  # type: ignore[attr-defined]

    records.change_durably(storage.engine(), analysis_id, apply, time.monotonic() + WRITE_SECONDS)
