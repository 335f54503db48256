"""The post-analysis pipeline: five stage functions run in order, with progress.

Every stage is a PLACEHOLDER until real models exist. Each returns
`{"placeholder": True, ...}` and decides nothing: the pipeline reports no trust
score (`trust_score` is None) rather than invent one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rq import get_current_job

from workers.progress import report_progress
from workers.stages import STAGE_NAMES
from workers.storage import save_post_analysis

StageResult = dict[str, Any]


def extract_content(url: str, found: dict[str, StageResult]) -> StageResult:
    """PLACEHOLDER: will download the post's caption and media."""
    return {"placeholder": True, "url": url, "caption": None, "media": []}


def detect_ai_content(url: str, found: dict[str, StageResult]) -> StageResult:
    """PLACEHOLDER: will score how likely the media is AI-generated."""
    return {"placeholder": True, "ai_generated_probability": None}


def detect_deepfakes(url: str, found: dict[str, StageResult]) -> StageResult:
    """PLACEHOLDER: will look for manipulated faces in the media."""
    return {"placeholder": True, "deepfake_probability": None}


def fact_check(url: str, found: dict[str, StageResult]) -> StageResult:
    """PLACEHOLDER: will extract claims from the caption and check them."""
    return {"placeholder": True, "claims": []}


def compute_trust_score(url: str, found: dict[str, StageResult]) -> StageResult:
    """PLACEHOLDER: will combine the stages above; until then there is no score."""
    return {"placeholder": True, "trust_score": None}


PIPELINE: tuple[tuple[str, str, Callable[[str, dict[str, StageResult]], StageResult]], ...] = (
    ("content", STAGE_NAMES[0], extract_content),
    ("ai_detection", STAGE_NAMES[1], detect_ai_content),
    ("deepfake_detection", STAGE_NAMES[2], detect_deepfakes),
    ("fact_check", STAGE_NAMES[3], fact_check),
    ("trust", STAGE_NAMES[4], compute_trust_score),
)


def analyse(url: str) -> dict[str, Any]:
    """Run every stage on `url`; each stage sees what the earlier ones found."""
    found: dict[str, StageResult] = {}
    for index, (key, stage_name, stage) in enumerate(PIPELINE):
        report_progress(int(100 * index / len(PIPELINE)), stage_name)
        found[key] = stage(url, found)
    report_progress(100, "Done")
    return {
        "url": url,
        "placeholder": True,
        "trust_score": found["trust"]["trust_score"],
        "stages": found,
    }


def process_post(url: str) -> dict[str, Any]:
    """The `analysis.process_post` job: analyse, then keep the outcome in the database."""
    result = analyse(url)
    job = get_current_job()
    if job is not None:
        save_post_analysis(job.id, url, result)
    return result
