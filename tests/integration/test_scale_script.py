"""scripts/scale.py still works, and at a few thousand stored tasks every call of the API and
the dashboard answers at most its page, its answer no bigger than with a nearly empty Redis
(the timing gate is the benchmark's own run: on a shared CI machine a ratio of medians of a
few milliseconds is not test material)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.paths import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.timeout(330)
def test_every_call_answers_its_page_with_thousands_of_tasks_stored() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/scale.py", "--finished", "3000", "--failed", "300", "--samples", "3",
         "--max-ratio", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "stored 3,000 finished + 300 failed tasks" in output
    assert "calls over the limits: 0" in output
    for row in ("| GET /health |", "| GET /tasks/<finished id> |", "| GET /metrics |", "| queues.json |",
                "| jobs finished dsc middle |", "| jobs failed asc last |", "| dashboard job page |"):
        assert row in output, row
    assert "bytes per stored task" in output
