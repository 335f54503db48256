"""scripts/fuzz.py still works, at a small size: it starts the Procfile's stack at the
default settings, fuzzes it over HTTP and reports its counts (the full run is by hand)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.paths import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.timeout(330)  # the script may take 300 s
def test_fuzz_script_runs_its_cases_against_the_real_stack() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/fuzz.py", "--cases", "120", "--time-limit", "120"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answered = re.search(r"^(\d+) cases answered in \d+ s", result.stdout, re.MULTILINE)
    assert answered and 120 <= int(answered.group(1)) < 160, result.stdout
    assert "findings: none" in result.stdout
    assert re.search(r"^  /tasks/test/add +.*\b202\b", result.stdout, re.MULTILINE), result.stdout  # got past validation
    assert re.search(r"^  /tasks/\{task_id\} ", result.stdout, re.MULTILINE), result.stdout  # every operation reached
