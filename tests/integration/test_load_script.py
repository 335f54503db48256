"""The load script still works, at a small size and the default settings (a benchmark, not a timed test)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.paths import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.timeout(330)  # the script may take 300 s
def test_load_script_submits_and_checks_every_job() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/load.py", "--start", "--jobs", "200", "--clients", "8", "--workers", "2",
         "--web-processes", "1", "--timeout", "120"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all 200 completed with the right result" in result.stdout
    assert "submissions/s" in result.stdout and "p99" in result.stdout
    assert "answered 429        0 " in result.stdout  # eight clients, each its own, at the default limit
