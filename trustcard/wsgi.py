"""WSGI entry point for gunicorn: `gunicorn trustcard.wsgi:app`.

Loads `.env` (the real environment wins) and the settings, then builds the app. A bad
setting stops the process with one sentence naming it; exit status 3 tells gunicorn's
master that the worker cannot boot, so it stops instead of restarting it in a loop.
"""

from __future__ import annotations

from trustcard.api.app import create_app
from trustcard.config import load_settings_or_exit
from trustcard.logs import configure_logging

_settings = load_settings_or_exit("trustcard")
configure_logging(_settings)
app = create_app(_settings)
