"""rq-dashboard, mounted at /rq inside the web app, behind HTTP Basic auth.

rq-dashboard 0.9.0 needs three fixes to serve this service:

- it reads jobs with the serializer set on `rq_dashboard.web.config`, pickle by
  default: we set JSON;
- its workers view builds workers with `Worker.all()` and no serializer, so a
  running JSON job makes `/rq/0/data/workers.json` answer 500: its module-level
  `Worker` is replaced by one that reads with JSON;
- its blueprint is a module-level object, and a `before_request` hook cannot be
  added once it has been registered on any app. The login guard is attached once,
  at import, and reads the credentials of whichever app serves the request, so
  every app built by `create_app` (tests build many) is guarded.

Without `DASHBOARD_PASSWORD` the blueprint is not registered: /rq is a plain 404.
"""

from __future__ import annotations

import hmac
from typing import Any

import rq_dashboard
import rq_dashboard.web
from flask import Flask, Response, current_app, jsonify, request
from rq.serializers import JSONSerializer
from rq.worker import Worker

from trustcard.config import Settings

URL_PREFIX = "/rq"
REALM = 'Basic realm="TrustCard dashboard", charset="UTF-8"'


class JSONReadingWorker(Worker):
    """What the dashboard lists workers with: reads their current jobs as JSON."""

    @classmethod
    def all(cls, *args: Any, **kwargs: Any) -> list[Any]:
        kwargs["serializer"] = JSONSerializer
        return super().all(*args, **kwargs)


def _credentials_match(settings: Settings) -> bool:
    auth = request.authorization
    if auth is None or auth.type != "basic" or settings.dashboard_password is None:
        return False
    # Both comparisons always run, in constant time, so timing tells nothing.
    user_ok = hmac.compare_digest((auth.username or "").encode(), settings.dashboard_username.encode())
    password_ok = hmac.compare_digest((auth.password or "").encode(), settings.dashboard_password.encode())
    return user_ok & password_ok


def require_login() -> Response | None:
    """`before_request` guard on every dashboard route, GET and POST alike."""
    if _credentials_match(current_app.config["TRUSTCARD_SETTINGS"]):
        return None
    response = jsonify({"error": "unauthorized", "message": "The dashboard needs a username and password."})
    response.status_code = 401
    response.headers["WWW-Authenticate"] = REALM
    return response


rq_dashboard.web.config.serializer = JSONSerializer
rq_dashboard.web.Worker = JSONReadingWorker
rq_dashboard.web.blueprint.before_request(require_login)


def init_app(app: Flask, settings: Settings) -> None:
    """Mount the dashboard at /rq when a password is configured."""
    if settings.dashboard_password is None:
        return
    app.config.from_object(rq_dashboard.default_settings)
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    rq_dashboard.web.setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=URL_PREFIX)
