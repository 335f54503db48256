"""Gunicorn settings for the web process, read from the environment like the app's.

`PORT` and `WEB_CONCURRENCY` are the names platforms set. Requests are short (every
slow thing is a job), except the event streams and `?wait` long polls, which only wait:
the worker class is gunicorn's gevent worker (why: trustcard/gunicorn_worker.py), which
holds up to `WEB_CONNECTIONS` connections per process, each in a greenlet, and answers
the requests gunicorn refuses itself (request line or headers too large, malformed HTTP)
with the API's JSON errors. `graceful_timeout` lets in-flight requests finish on SIGTERM
within a platform's 30 s grace period. `WEB_THREADS` is gthread's pool size; gevent does
not use it.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT') or 8000}"
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
worker_class = "trustcard.gunicorn_worker.JSONErrorGeventWorker"
worker_connections = int(os.environ.get("WEB_CONNECTIONS") or 4000)
threads = int(os.environ.get("WEB_THREADS") or 4)
timeout = 30
graceful_timeout = 25
keepalive = 5
accesslog = "-"
errorlog = "-"
# The access line names the request id the API sent back, so it joins the app's lines for it.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" request_id=%({x-request-id}o)s'

if (os.environ.get("LOG_FORMAT") or "text").strip().lower() == "json":
    # Gunicorn's own lines (access and errors) as JSON objects too, like the app's.
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "trustcard.logs.JSONFormatter"}},
        # Gunicorn merges this over its own defaults, which name these two handlers.
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
            "error_console": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
        "root": {"level": "INFO", "handlers": []},  # the app adds its own (trustcard.logs)
    }


def post_fork(server: object, worker: object) -> None:
    """Make psycopg2 wait for PostgreSQL through gevent's loop, so that one database call
    does not stall every other request of the process."""
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
