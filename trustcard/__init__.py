"""TrustCard's job-queue service: an HTTP API over RQ queues, and the workers behind it."""

from trustcard.app import create_app

__all__ = ["create_app"]
