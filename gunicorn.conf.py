"""Gunicorn settings for the web process, read from the environment like the app's.

`PORT` and `WEB_CONCURRENCY` are the names platforms set. Each variable read here is
declared with the app's settings (`trustcard/config/declarations.py`), and a bad one stops
the web before it binds, with the same one sentence and exit status 3. Requests are short (every
slow thing is a job), except the event streams and `?wait` long polls, which only wait:
the worker class is gunicorn's gevent worker (why: trustcard/gunicorn_worker.py), which
holds up to `WEB_CONNECTIONS` connections per process, each in a greenlet, and answers
the requests gunicorn refuses itself (request line or headers too large, malformed HTTP)
with the API's JSON errors. `graceful_timeout` lets in-flight requests finish on SIGTERM
within a platform's 30 s grace period. `WEB_THREADS` is gthread's pool size; gevent does
not use it.
"""

from trustcard.config import read_variables_or_exit

_web = read_variables_or_exit(
    "trustcard", ("PORT", "WEB_CONCURRENCY", "WEB_CONNECTIONS", "WEB_THREADS", "WEB_KEEPALIVE_REQUESTS", "LOG_FORMAT")
)
# WEB_KEEPALIVE_REQUESTS is read here only to stop a bad value before the web binds; the
# worker class applies it (trustcard.gunicorn_worker.KeepAliveCap).
bind = f"0.0.0.0:{_web['PORT']}"
workers = _web["WEB_CONCURRENCY"]
worker_class = "trustcard.gunicorn_worker.JSONErrorGeventWorker"
worker_connections = _web["WEB_CONNECTIONS"]
threads = _web["WEB_THREADS"]
timeout = 30
graceful_timeout = 25
keepalive = 5
accesslog = "-"
logger_class = "trustcard.gunicorn_logging.AccessLogger"  # gunicorn's lines, built for less (see there)
errorlog = "-"
# The access line names the request id the API sent back, so it joins the app's lines for it.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" request_id=%({x-request-id}o)s'

if _web["LOG_FORMAT"] == "json":
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


def post_worker_init(worker: object) -> None:
    """Each web process runs the check of analyses nobody reads whose next stage was never
    queued (trustcard/api/stranded_watch.py), on the app it just loaded."""
    app = getattr(worker, "wsgi", None)
    if "trustcard.engine" not in getattr(app, "extensions", {}):
        return  # another WSGI app on these settings (the benchmark's Celery app): nothing to check
    from trustcard.api.stranded_watch import start_in

    start_in(app)
