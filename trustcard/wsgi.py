"""WSGI entry point for gunicorn: `gunicorn trustcard.wsgi:app`.

Loads `.env` (the real environment wins), then builds the app. A bad setting stops
the process with one sentence naming it; exit status 3 tells gunicorn's master that
the worker cannot boot, so it stops instead of restarting it in a loop.
"""

from __future__ import annotations

import sys

from dotenv import load_dotenv

from trustcard.exceptions import ConfigError

load_dotenv(override=False)

try:
    from trustcard.api.app import create_app
    from trustcard.config import load_settings
    from trustcard.logs import configure_logging

    _settings = load_settings()
    configure_logging(_settings)
    app = create_app(_settings)
except ConfigError as error:
    print(f"trustcard: configuration error: {error}", file=sys.stderr, flush=True)
    sys.exit(3)
