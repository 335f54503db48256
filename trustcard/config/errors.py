"""The one error of configuration, kept apart so that reading settings stays light.

gunicorn's config file reads its variables through this package in the master process,
before the gevent worker monkey-patches; nothing imported here may import `ssl` (redis,
RQ, pydantic's network types), or gevent warns on every boot and patches too late.
"""

from __future__ import annotations


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one sentence naming it."""
