"""The names of the queues, in one place: the catalogue and the analysis stages both use them."""

from __future__ import annotations

WEBHOOKS_QUEUE = "webhooks"
"""Webhook deliveries: small, and useless when late."""
ANALYSIS_QUEUE = "analysis"
"""The catalogue's job types, and the trust score, the last stage of an analysis."""
MODELS_QUEUE = "models"
"""The model stages (AI-generated media, deepfakes, claims): few heavy workers, later with accelerators."""
INGEST_QUEUE = "ingest"
"""Fetching a post's content: network-bound, many light workers."""

PRIORITY_ORDER: tuple[str, ...] = (WEBHOOKS_QUEUE, ANALYSIS_QUEUE, MODELS_QUEUE, INGEST_QUEUE)
"""The order a worker serving every queue looks at them: deliveries first, then finishing
analyses already under way (trust score, models) before starting new ones (ingest)."""
