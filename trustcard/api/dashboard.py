"""rq-dashboard, mounted at /rq inside the web app, behind HTTP Basic auth.

rq-dashboard 0.9.0 does not serve this service as shipped:

- it reads jobs with the serializer on `rq_dashboard.web.config` (pickle by
  default), and its job page, requeue action and workers view read jobs with no
  serializer at all: with a JSON job running, `/rq/0/data/workers.json` answers 500.
  Its module-level `Worker`, `Job` and `requeue_job` are replaced by ones that read
  JSON;
- it opens a new Redis client, without timeouts, on every request: it is given the
  app's own client instead (timeouts, one pool; fakeredis in unit tests);
- its JSON jobs lists read far more than their page (page N of a registry reads about N
  pages): `dashboard_pages.jobs_page` reads only the page, under rq-dashboard's own name;
- its blueprint is a module-level object: Flask refuses a `before_request` hook added
  to it after its first registration, so a guard added per app breaks the second app
  `create_app` builds. The login guard is an app-level hook on the /rq path instead,
  attached to each app, and app-level hooks run before the blueprint's own.

Without `DASHBOARD_PASSWORD` nothing is registered: /rq is our plain JSON 404.
"""

from __future__ import annotations

import functools
import hmac
import logging
from typing import TYPE_CHECKING, Any

import rq_dashboard
import rq_dashboard.web
from flask import Flask, Response, current_app, request
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, requeue_job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.worker import Worker

from trustcard.api import dashboard_pages
from trustcard.api.errors import error_response
from trustcard.catalogue import QUEUE_NAMES
from trustcard.config import Settings
from trustcard.connections import REDIS_DOWN_ERRORS, web_redis
from trustcard.exceptions import QueueUnavailable, TaskNotFound, TaskNotRetryable
from trustcard.logs import redacted_url

if TYPE_CHECKING:
    from collections.abc import Callable

    from redis import Redis

log = logging.getLogger(__name__)

URL_PREFIX = "/rq"
BLUEPRINT = rq_dashboard.blueprint.name
REALM = 'Basic realm="TrustCard dashboard", charset="UTF-8"'
REDIS_EXTENSION = "trustcard.redis"
JOBS_LIST = f"{BLUEPRINT}.list_jobs"
"""rq-dashboard's JSON jobs list; its page is read by `dashboard_pages.jobs_page`."""
ONLY_INSTANCE = 0
"""The dashboard shows one Redis (ours): instance 0 in its URLs."""


class JSONReadingWorker(Worker):
    """What the dashboard lists workers with: reads their current jobs as JSON."""

    @classmethod
    def all(cls, *args: Any, **kwargs: Any) -> list[Any]:
        kwargs["serializer"] = JSONSerializer
        return super().all(*args, **kwargs)


class DecodableId(str):
    """A job id that also answers `.decode()`, as the bytes RQ 1 returned did."""

    def decode(self, *_args: Any) -> str:
        return str(self)


class JSONReadingJob(Job):
    """What the dashboard fetches single jobs with: JSON unless told otherwise."""

    @classmethod
    def fetch(cls, id: str, connection: Redis | None = None, serializer: Any = None) -> Job:
        return super().fetch(id, connection=connection, serializer=serializer or JSONSerializer)

    @property
    def dependency_ids(self) -> list[str]:
        """RQ 3's ids (text) that rq-dashboard 0.9.0's job JSON can `.decode()`: it was a 500
        for every job with a dependency."""
        return [DecodableId(job_id) for job_id in super().dependency_ids]


def requeue_failed_job(job_id: str, connection: Redis) -> Job:
    """The dashboard's requeue action: JSON, and a 409 (not a 500) for a job that has not failed."""
    try:
        return requeue_job(job_id, connection=connection, serializer=JSONSerializer)
    except InvalidJobOperation:
        raise TaskNotRetryable(f"Task {job_id} has not failed, so it cannot be requeued.", task_id=job_id) from None


def app_redis(url: str, **_options: Any) -> tuple[None, Redis]:
    """Stands in for rq-dashboard's `redis_sentinel_url.connect`: the serving app's client."""
    return None, current_app.extensions[REDIS_EXTENSION]


def _teach_rq_dashboard_json() -> None:
    """Point rq-dashboard's module-level names at ours; idempotent, process-wide."""
    rq_dashboard.web.config.serializer = JSONSerializer
    rq_dashboard.web.Worker = JSONReadingWorker
    rq_dashboard.web.Job = JSONReadingJob
    rq_dashboard.web.requeue_job = requeue_failed_job
    rq_dashboard.web.from_url = app_redis
    rq_dashboard.web.get_queue_registry_jobs_count = dashboard_pages.jobs_page


def _is_dashboard_path(path: str) -> bool:
    return path == URL_PREFIX or path.startswith(URL_PREFIX + "/")


def _credentials_match(settings: Settings) -> bool:
    auth = request.authorization
    if auth is None or auth.type != "basic" or settings.dashboard_password is None:
        return False
    # Both comparisons always run, in constant time, so timing tells nothing.
    user_ok = hmac.compare_digest((auth.username or "").encode(), settings.dashboard_username.encode())
    password_ok = hmac.compare_digest((auth.password or "").encode(), settings.dashboard_password.encode())
    return user_ok & password_ok


def require_login() -> Response | None:
    """App-level `before_request`: every path under /rq (GET, POST, static files) needs the login.

    App-level hooks run before the blueprint's own, so no dashboard code (nor Redis)
    is reached without it.
    """
    if not _is_dashboard_path(request.path):
        return None
    if not _credentials_match(current_app.config["TRUSTCARD_SETTINGS"]):
        response = error_response(401, "unauthorized", "The dashboard needs a username and password.")
        response.headers["WWW-Authenticate"] = REALM
        return response
    instance = (request.view_args or {}).get("instance_number", ONLY_INSTANCE)
    if instance != ONLY_INSTANCE:  # rq-dashboard answers 500 for an instance it does not have
        return error_response(404, "not_found", f"The dashboard shows one Redis: instance {ONLY_INSTANCE}.")
    _list_every_queue()
    return None


def _list_every_queue() -> None:
    """rq-dashboard lists the queues of RQ's `rq:queues` set, which RQ fills only when a job is
    first put on a queue (and a Redis flush empties): every catalogue queue is added, so an idle
    `models` or `ingest` queue shows too. One SADD per dashboard request; a Redis that does not
    answer is left to the view, which answers 503."""
    keys = [Queue.redis_queue_namespace_prefix + name for name in QUEUE_NAMES]
    try:
        current_app.extensions[REDIS_EXTENSION].sadd(Queue.redis_queues_keys, *keys)
    except REDIS_DOWN_ERRORS:
        pass


def _answering_as_json(view: Callable[..., Any]) -> Callable[..., Any]:
    """Unknown jobs become 404 and an unreachable Redis 503, instead of rq-dashboard's 500."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except NoSuchJobError:
            raise TaskNotFound(f"No job {kwargs.get('job_id')!r}.", task_id=kwargs.get("job_id")) from None
        except REDIS_DOWN_ERRORS as error:
            log.warning("dashboard: redis unreachable: %s", error)
            raise QueueUnavailable("The task queue (Redis) is unreachable; try again shortly.") from None

    return wrapper


def _checking_page(view: Callable[..., Any]) -> Callable[..., Any]:
    """A jobs list with a page size or number that is not a small positive whole number is a
    422 naming it (rq-dashboard answers 500, and would read a registry whole for a huge page)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        per_page, page = dashboard_pages.checked_page(str(kwargs["per_page"]), str(kwargs["page"]))
        return view(*args, **{**kwargs, "per_page": per_page, "page": page})

    return wrapper


def init_app(app: Flask, settings: Settings) -> None:
    """Mount the dashboard at /rq when a password is configured; safe for any number of apps."""
    if settings.dashboard_password is None:
        return
    _teach_rq_dashboard_json()
    app.config.from_object(rq_dashboard.default_settings)
    app.config["RQ_DASHBOARD_REDIS_URL"] = (redacted_url(settings.redis_url),)  # shown, never used to connect
    if REDIS_EXTENSION not in app.extensions:
        app.extensions[REDIS_EXTENSION] = web_redis(settings)
    app.redis_conn = app.extensions[REDIS_EXTENSION]  # type: ignore[attr-defined]  # read by rq-dashboard
    app.before_request(require_login)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
    for endpoint, view in list(app.view_functions.items()):
        if endpoint == JOBS_LIST:
            view = _checking_page(view)
        if endpoint.startswith(BLUEPRINT + "."):
            app.view_functions[endpoint] = _answering_as_json(view)
