"""A stage that tests register, as a real model would be: one function, one `register()`.

What it does is steered by files in `$TRUSTCARD_PROBE_DIR`, so that a test can steer it in
worker processes too: `fail-<shortcode>` makes it raise, `sleep-<shortcode>` (holding
seconds) makes it sleep first; every run appends a line to `runs-<shortcode>`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from trustcard.analyses.stages import Stage, register, unregister

PROBE = Stage("probe", "tests.stage_probes.probe", "probes", "Probing...", soft_timeout=2, hard_timeout=4)
"""On a queue of its own, as a model needing other machines would be."""
PROBE_ON_MODELS = Stage("probe", "tests.stage_probes.probe", "models", "Probing...", soft_timeout=2, hard_timeout=4)
"""The same, on a queue the Procfile's worker serves."""


def _directory() -> Path:
    return Path(os.environ["TRUSTCARD_PROBE_DIR"])


def probe(url: str, found: dict[str, Any]) -> dict[str, Any]:
    shortcode = url.rstrip("/").rsplit("/", 1)[-1]
    directory = _directory()
    with (directory / f"runs-{shortcode}").open("a") as runs:
        runs.write(f"{os.getpid()}\n")
    sleep = directory / f"sleep-{shortcode}"
    if sleep.exists():
        time.sleep(float(sleep.read_text()))
    if (directory / f"fail-{shortcode}").exists():
        raise RuntimeError(f"probe refused {shortcode}")
    return {"probed": shortcode, "saw": sorted(found)}


def runs(shortcode: str) -> int:
    path = _directory() / f"runs-{shortcode}"
    return len(path.read_text().splitlines()) if path.exists() else 0


def register_probe(on_models: bool = False) -> Stage:
    stage = PROBE_ON_MODELS if on_models else PROBE
    register(stage)
    return stage


def unregister_probe() -> None:
    unregister(PROBE.name)
