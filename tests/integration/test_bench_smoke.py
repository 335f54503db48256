"""`scripts/bench.py --tiny` still works end to end: every system starts, drains, answers.

A benchmark is not a test; this only shows that the command in the README runs (its
private Redis, both web processes, every worker kind and Celery) and prints its table.
Its figures at this size mean nothing and are not checked.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.procfile import worker_class

pytestmark = pytest.mark.integration

OURS = f"{worker_class().rpartition('.')[2]} (long-lived job process) x2"
"""The Procfile's worker's row, named by its class (read from the Procfile)."""
ROWS = (
    "RQ `rq worker` (fork per job) x2",
    "RQ `SimpleWorker` x2",
    OURS,
    "Celery prefork `-c 2`",
)


@pytest.mark.timeout(660)  # the bench run itself may take 600 s
def test_bench_runs_at_tiny_size(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--tiny", "--keep", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    table = finished.stdout
    for row in ROWS:
        assert f"| {row} |" in table, table
        line = next(line for line in table.splitlines() if line.startswith(f"| {row} |"))
        peak_rss, peak_pss = (float(cell.replace(",", "")) for cell in line.strip("| ").split(" | ")[-2:])
        assert 0 < peak_pss <= peak_rss, line  # both memory figures were sampled
    assert "| RQ, HTTP API (Procfile web) |" in table
    assert "| RQ, HTTP API batched (POST /tasks/batch, 1,000 a request) |" in table
    stored = table.split("| worker | Redis bytes per finished task", 1)[1].split("\n\n", 1)[0]
    for row in ROWS:  # every system's Redis bytes per finished task was measured
        line = next(line for line in stored.splitlines() if line.startswith(f"| {row} |"))
        assert float(line.split(" | ")[1].replace(",", "")) > 0, line
    assert "| RQ, HTTP API (Procfile web), 8 client threads |" in table
    assert "HTTP submissions from 8 client threads: " in table
    assert "\nTargets: drain " in table and "`?wait` p50 " in table  # each target said met or not
    trips = table.split("| CPU per round trip, us: client / web / workers / redis-server / all |", 1)[1]
    for path in (f"{OURS}: HTTP `?wait=25`", "Celery: `AsyncResult.get()` (library)"):
        line = next(line for line in trips.splitlines() if line.startswith(f"| {path} |"))
        assert float(line.rsplit(" / ", 1)[1].strip(" |").replace(",", "")) > 0, line  # its CPU was measured
    assert "| Celery, library |" in table
    for pushed in (f"{OURS}: HTTP `?wait=25`",
                   f"{OURS}: HTTP event stream",
                   f"{OURS}: HTTP submit with `Prefer: wait=25` (one round trip)",
                   "Celery: `AsyncResult.get()` (library)"):
        assert f"| {pushed} |" in table, table
    # The private redis-server and every process it started are gone.
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
