"""TrustCard's job-queue service: an HTTP API over RQ queues, and the workers behind it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trustcard.api.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    """Import the Flask app factory only when asked for, so the CLI and workers never load Flask."""
    if name == "create_app":
        from trustcard.api.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
