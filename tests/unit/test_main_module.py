"""`python -m trustcard` is the command-line client, run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from trustcard.catalogue import JOB_TYPES

ROOT = Path(__file__).resolve().parents[2]


def run_module(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustcard", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_python_m_trustcard_runs_the_cli() -> None:
    listed = run_module("--json", "types")
    assert listed.returncode == 0, listed.stderr
    assert [kind["name"] for kind in json.loads(listed.stdout)] == [job_type.name for job_type in JOB_TYPES]
    helped = run_module("--help")
    assert helped.returncode == 0 and helped.stdout.startswith("Usage: trustcard ")


def test_python_m_trustcard_keeps_the_clis_exit_status_and_one_line_errors() -> None:
    unreachable = run_module("health", TRUSTCARD_URL="http://127.0.0.1:9")
    assert unreachable.returncode == 3
    assert unreachable.stderr.startswith("trustcard: cannot reach http://127.0.0.1:9")
    assert "Traceback" not in unreachable.stderr
