"""scripts/chaos.py at the suite's size (`--ci`): every fault kind injected into the Procfile stack
while traffic runs, then nothing accepted is lost, stuck, wrong or run twice unexplained.
The script has its own stack (a private Redis with an append-only file, SQLite), so this test
touches neither the shared Redis nor PostgreSQL."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.chaos_faults import FAULT_KINDS
from tests.support.paths import ROOT

pytestmark = pytest.mark.integration


def row(output: str, name: str) -> str:
    """The value of the table's row `name`."""
    found = re.search(rf"^\| {re.escape(name)} +\| (.+?) \|$", output, re.MULTILINE)
    assert found, f"no row {name!r} in:\n{output}"
    return found.group(1)


@pytest.mark.timeout(420)
def test_the_ci_sized_soak_loses_nothing_under_every_kind_of_fault() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/chaos.py", "--ci", "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=400
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "PASSED: nothing lost, stuck, wrong or run twice unexplained" in output
    for kind in FAULT_KINDS:
        assert int(row(output, kind)) >= 1, f"{kind} never injected:\n{output}"
    accepted = int(row(output, "tasks accepted").split()[0])
    ended = sum(int(row(output, f"ended {outcome}")) for outcome in ("completed", "failed", "cancelled"))
    assert accepted >= 100 and ended == accepted, output
    assert int(row(output, "ended completed")) > accepted // 2, output
    for must_be_zero in ("lost (must be 0)", "stuck (must be 0)", "wrong result or end (must be 0)",
                         "ran more than once, unexplained (must be 0)"):
        assert row(output, must_be_zero) == "0", output
    assert "DeliberateFailure (on purpose)" in output  # the failures were exercised, and reported
