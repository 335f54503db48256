"""The five stages of a TrustCard analysis, in order, as clients see them."""

from __future__ import annotations

STAGE_NAMES: tuple[str, ...] = (
    "Extracting Instagram content...",
    "Running AI detection...",
    "Checking for deepfakes...",
    "Fact-checking claims...",
    "Calculating trust score...",
)
