"""The stages of an analysis, declared once, in order: name, function, queue, limits, retries.

The web snapshots the list into each new analysis (so an analysis keeps the stages it was
started with); each stage runs as its own RQ job on its own queue, under its own limits
(`workers.analysis_runner`). Adding a real model later is writing one function
`(url, found) -> dict` and `register()`ing it. The functions are named by dotted path, so
the web never imports job code; workers run only the functions registered here.
"""

from __future__ import annotations

from dataclasses import dataclass

from trustcard.queue_names import ANALYSIS_QUEUE, INGEST_QUEUE, MODELS_QUEUE


@dataclass(frozen=True)
class Stage:
    name: str
    function: str
    """Dotted path of `(url: str, found: dict[str, dict]) -> dict`: `found` holds the
    outputs of the stages before it, by name. Its output must be JSON."""
    queue: str
    label: str
    """What progress shows while it runs."""
    soft_timeout: int
    """Seconds: the job gets the soft-limit exception (and fails) after this long."""
    hard_timeout: int
    """Seconds: its worker kills it after this long, whatever it does."""
    retries: int = 0
    retry_backoff: tuple[int, ...] = ()
    """Seconds before each retry; the last one repeats."""


DEFAULT_STAGES: tuple[Stage, ...] = (
    Stage("content", "workers.analysis.extract_content", INGEST_QUEUE, "Extracting Instagram content...",
          soft_timeout=60, hard_timeout=90, retries=2, retry_backoff=(5, 30)),
    Stage("ai_detection", "workers.analysis.detect_ai_content", MODELS_QUEUE, "Running AI detection...",
          soft_timeout=240, hard_timeout=300),
    Stage("deepfake_detection", "workers.analysis.detect_deepfakes", MODELS_QUEUE, "Checking for deepfakes...",
          soft_timeout=240, hard_timeout=300),
    Stage("fact_check", "workers.analysis.fact_check", MODELS_QUEUE, "Fact-checking claims...",
          soft_timeout=240, hard_timeout=300),
    Stage("trust", "workers.analysis.compute_trust_score", ANALYSIS_QUEUE, "Calculating trust score...",
          soft_timeout=30, hard_timeout=60),
)
"""Fetching is network-bound (many light workers on `ingest`); the three models are heavy
(few workers on `models`, later on machines with accelerators); the score is quick."""
TRUST_STAGE = "trust"
"""The stage whose output's `trust_score` becomes the analysis's."""

_registered: list[Stage] = list(DEFAULT_STAGES)


def stages() -> tuple[Stage, ...]:
    """The stages a new analysis runs, in order."""
    return tuple(_registered)


def register(stage: Stage, *, before: str | None = TRUST_STAGE) -> None:
    """Add a stage, by default just before the trust score (which combines the others)."""
    if find(stage.name) is not None:
        raise ValueError(f"a stage named {stage.name!r} is already registered")
    if stage.soft_timeout <= 0 or stage.hard_timeout < stage.soft_timeout:
        raise ValueError(f"stage {stage.name!r}: limits must be 0 < soft <= hard")
    names = [existing.name for existing in _registered]
    _registered.insert(names.index(before) if before in names else len(names), stage)


def unregister(name: str) -> None:
    """Remove a registered stage (tests put the defaults back with this)."""
    _registered[:] = [stage for stage in _registered if stage.name != name]


def find(name: str) -> Stage | None:
    return next((stage for stage in _registered if stage.name == name), None)


def queue_names() -> tuple[str, ...]:
    return tuple(dict.fromkeys(stage.queue for stage in _registered))
