"""The Flask application factory."""

from __future__ import annotations

import logging

from typing import TYPE_CHECKING

from flask import Flask

from trustcard.config import Settings, load_settings

if TYPE_CHECKING:
    from redis import Redis


def create_app(settings: Settings | None = None, *, redis: Redis | None = None) -> Flask:
    """Build the app: settings, then connections, then blueprints.

    `settings` defaults to the process environment; tests pass their own, and may pass
    a ready `redis` client (fakeredis in unit tests) instead of `REDIS_URL`.
    """
    from trustcard import rq_seams
    from trustcard.analyses.service import AnalysisService
    from trustcard.api import (
        analysis_routes, auth, batch_routes, dashboard, errors, event_hub, health, metrics, openapi, request_body, sessions,
        task_routes,
    )
    from trustcard.api.ratelimit import RateLimiter
    from trustcard.connections import web_redis
    from trustcard.database import make_engine
    from trustcard.task_service import TaskService

    settings = settings or load_settings()
    rq_seams.install_speedups()  # and RQ's result readers, for the dashboard (trustcard.job_results)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        TRUSTCARD_SETTINGS=settings,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    sessions.init_app(app)
    logging.getLogger("trustcard").setLevel(logging.INFO)

    given_redis = redis
    redis = redis if redis is not None else web_redis(settings)
    app.extensions["trustcard.redis"] = redis
    app.extensions["trustcard.engine"] = make_engine(settings.database_url)
    app.extensions["trustcard.task_service"] = TaskService(redis, settings)
    app.extensions["trustcard.analysis_service"] = AnalysisService(
        app.extensions["trustcard.engine"], redis, settings, app.extensions["trustcard.task_service"]
    )
    app.extensions["trustcard.ratelimiter"] = RateLimiter(redis, settings)
    event_hub.init_app(app, settings, given_redis)

    auth.init_app(app, settings)
    app.before_request(request_body.refuse_oversized_body)
    errors.init_app(app)
    app.register_blueprint(task_routes.bp)
    app.register_blueprint(batch_routes.bp)
    app.register_blueprint(analysis_routes.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    metrics.init_app(app)
    dashboard.init_app(app, settings)
    return app
