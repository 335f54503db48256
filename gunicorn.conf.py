"""Gunicorn settings for the web process, read from the environment like the app's.

`PORT` and `WEB_CONCURRENCY` are the names platforms set. Requests are short (every
slow thing is a job), so a tight worker timeout is safe; `graceful_timeout` lets
in-flight requests finish on SIGTERM within a platform's 30 s grace period.
The worker class is gunicorn's gthread, except that the requests gunicorn refuses
itself (request line or headers too large, malformed HTTP) get the API's JSON errors.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT') or 8000}"
workers = int(os.environ.get("WEB_CONCURRENCY") or 2)
worker_class = "trustcard.gunicorn_worker.JSONErrorWorker"
threads = int(os.environ.get("WEB_THREADS") or 4)
timeout = 30
graceful_timeout = 25
keepalive = 5
accesslog = "-"
errorlog = "-"
