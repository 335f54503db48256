"""The service's settings: each declared once, read from the environment once, passed down
as one `Settings` object.

- `declarations`: every variable with its kind, default and meaning (the one table);
- `kinds`: how a variable's text becomes a value, with the sentence a bad one gets;
- `api_keys`: the clients of `API_KEYS` and `API_KEY`;
- `loading`: `load_settings(env)` for code and tests, `load_settings_or_exit(program)`
  for entry points;
- `documents`: `.env.example` and the README's tables, written from the declarations
  (`python -m trustcard.config --write`).
"""

from __future__ import annotations

from trustcard.config.api_keys import SINGLE_API_KEY_NAME, ApiClient
from trustcard.config.declarations import (
    DEFAULT_DATABASE_URL,
    DEFAULT_RATE_LIMIT_BURST,
    DEFAULT_RATE_LIMIT_PER_MINUTE,
    DEFAULT_REDIS_URL,
    PROCESS_VARIABLES,
    SETTINGS,
    Settings,
    Variable,
)
from trustcard.config.loading import load_settings, load_settings_or_exit, read_variables_or_exit

__all__ = [
    "DEFAULT_DATABASE_URL",
    "DEFAULT_RATE_LIMIT_BURST",
    "DEFAULT_RATE_LIMIT_PER_MINUTE",
    "DEFAULT_REDIS_URL",
    "PROCESS_VARIABLES",
    "SETTINGS",
    "SINGLE_API_KEY_NAME",
    "ApiClient",
    "Settings",
    "Variable",
    "load_settings",
    "load_settings_or_exit",
    "read_variables_or_exit",
]
