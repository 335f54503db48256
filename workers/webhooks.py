"""The `webhooks.deliver` job: POST an ended task's final view to its Callback-URL, signed.

Enqueued with the task's end (`trustcard.callbacks.delivery_commands`), on the `webhooks`
queue, with RQ's own back-off retries (the catalogue's `WEBHOOK_DELIVERY`). Each attempt
writes its outcome into the task's callback state, so the task's view shows it; a failed
attempt raises so that RQ retries it, and the last one marks the callback failed.
"""

from __future__ import annotations

import http.client
import json
import logging
import time

from rq import get_current_job
from rq.job import Job

from trustcard.callback_urls import CallbackURLRefused, check_callback_url
from trustcard.callbacks import SIGNATURE_HEADER, CallbackState, CallbackStatus, save_state, signature
from trustcard.catalogue import WEBHOOK_DELIVERY
from trustcard.config import load_settings
from trustcard.exceptions import TaskNotFound
from trustcard.task_service import TaskService
from workers.webhook_sender import post

log = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 300


class DeliveryFailed(Exception):
    """This attempt did not deliver; RQ retries the job by its policy."""


def deliver(task_id: str, url: str) -> str:
    """One delivery attempt of task `task_id`'s final view to `url`."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("webhooks.deliver runs only inside a worker")
    connection = job.connection
    retries_left = job.retries_left or 0
    attempt = WEBHOOK_DELIVERY.retries - retries_left + 1
    settings = load_settings()
    service = TaskService(connection, settings)
    try:
        view = service.get(task_id)
    except TaskNotFound:
        log.warning("webhook for task %s: the task has expired; nothing to deliver", task_id)
        return "task expired"
    task_key = Job.key_for(task_id)
    try:
        outcome = _attempt(view.to_dict(), url, settings.webhook_secret, settings.webhook_allow_private)
    except DeliveryFailed as failed:
        last = retries_left <= 0
        status = CallbackStatus.FAILED if last else CallbackStatus.RETRYING
        state = CallbackState(url, status.value, attempt, str(failed))
        save_state(connection, task_key, state)
        if last:
            log.error("webhook for task %s: attempt %d failed, giving up: %s", task_id, attempt, failed)
        else:
            log.warning("webhook for task %s: attempt %d failed, will retry: %s", task_id, attempt, failed)
        raise
    save_state(connection, task_key, CallbackState(url, CallbackStatus.DELIVERED.value, attempt, None))
    log.info("webhook for task %s delivered on attempt %d: %s", task_id, attempt, outcome)
    return outcome


def _attempt(view: dict[str, object], url: str, secret: str | None, allow_private: bool) -> str:
    """POST `view` once; the receiver's status line when it answered 2xx, else `DeliveryFailed`."""
    if not secret:
        raise DeliveryFailed("WEBHOOK_SECRET is not set on the worker; deliveries are never sent unsigned")
    try:
        target = check_callback_url(url, allow_private=allow_private)  # DNS may answer otherwise by now
    except CallbackURLRefused as refused:
        raise DeliveryFailed(f"Callback-URL refused at delivery: {refused}") from None
    body = json.dumps(view, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(secret, body, int(time.time())),
    }
    try:
        answer = post(target, body, headers)
    except TimeoutError:
        raise DeliveryFailed("the receiver did not answer in time") from None
    except (OSError, http.client.HTTPException) as error:
        raise DeliveryFailed(_one_line(f"no answer from the receiver: {type(error).__name__}: {error}")) from None
    status_line = f"HTTP {answer.status} {answer.reason}".strip()
    if 200 <= answer.status < 300:
        return status_line
    if 300 <= answer.status < 400:
        where = f" to {answer.location}" if answer.location else ""
        raise DeliveryFailed(_one_line(f"the receiver answered {status_line}{where}; redirects are not followed"))
    raise DeliveryFailed(_one_line(f"the receiver answered {status_line}"))


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_ERROR_LENGTH else line[: MAX_ERROR_LENGTH - 3] + "..."
