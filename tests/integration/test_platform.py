"""The service as a Heroku-style platform runs it, end to end.

One stack for the module: the Procfile under honcho (release first, then `web` on `$PORT`
and three `worker`s), PostgreSQL given as a `postgres://` URL, a TLS-only Redis with a
self-signed certificate (as Heroku Redis serves it) that keeps its data (`appendonly`),
and nginx playing the router in front of the web. The settings are the defaults plus what
such a platform needs: `TRUSTED_PROXY_HOPS=1` and `REDIS_SSL_CERT_REQS=none`. Clients
come from many loopback addresses, so each is its own client to the rate limit.

The tests share the stack and run in file order; the last one stops and restarts it.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.support.ports import free_port
from tests.support.stack import POSTGRES_ADMIN_DSN, POSTGRES_SERVER_URL, TERMINAL
from tests.support.waiting import wait_until
from tests.support.platform_stack import (
    PLATFORM_GRACE_SECONDS,
    Answer,
    Honcho,
    Router,
    RouterClient,
    TlsRedis,
    make_certificates,
    platform_environment,
)

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

WORKERS = 3
LONG_STAGES = [
    "Extracting Instagram content...",
    "Running AI detection...",
    "Checking for deepfakes...",
    "Fact-checking claims...",
    "Calculating trust score...",
]
ENDED_METRIC = re.compile(r"^trustcard_tasks_ended_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)\s*$", re.MULTILINE)


@dataclass
class Platform:
    """The running stack, and what the tests have had accepted so far."""

    directory: Path
    env: dict[str, str]
    redis: TlsRedis
    router: Router
    runs: list[Honcho] = field(default_factory=list)
    accepted_adds: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def honcho(self) -> Honcho:
        return self.runs[-1]

    @property
    def logs(self) -> list[Path]:
        return [run.log_path for run in self.runs] + self.router.logs + [self.redis.log_path]

    def client(self, source: str = "127.0.0.1") -> RouterClient:
        return RouterClient(self.router.port, source)

    def run(self, name: str, *arguments: str) -> Honcho:
        honcho = Honcho(list(arguments), self.env, self.directory / f"{name}.log", self.directory / f"{name}.env")
        self.runs.append(honcho)
        honcho.start()
        return honcho

    def start_web_and_workers(self, name: str) -> None:
        self.run(name, "start", "-c", f"worker={WORKERS}", "web", "worker")
        with self.client() as client:
            wait_until(
                lambda: self.honcho.process.poll() is not None
                or ((answer := client.request("GET", "/health")).status == 200 and answer.body["workers"] >= WORKERS),
                60,
                "the web to answer healthy through the router with every worker registered",
                interval=0.25,
            )
        assert self.honcho.process.poll() is None, self.honcho.log_path.read_text(errors="replace")[-5000:]

    def submit_add(self, client: RouterClient, x: int, y: int, headers: dict[str, str] | None = None) -> Answer:
        answer = client.request("POST", f"/tasks/test/add?x={x}&y={y}", headers)
        if answer.status == 202:
            with self.lock:
                self.accepted_adds.add(answer.body["task_id"])
        return answer


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    directory = tmp_path_factory.mktemp("platform")
    certificate, _ = make_certificates(directory / "certificates")
    server = TlsRedis(free_port(), directory / "redis", certificate, appendonly=True)
    web_port = free_port()
    router = Router(free_port(), web_port, directory / "router")
    database = f"trustcard_platform_{uuid.uuid4().hex[:8]}"
    server_url = POSTGRES_SERVER_URL.split("://", 1)[1]
    config = {
        "DATABASE_URL": f"postgres://{server_url}/{database}",  # the scheme platforms still hand out
        "REDIS_URL": server.url,
        "PORT": str(web_port),
        "SECRET_KEY": "platform-secret-key",
        "TRUSTED_PROXY_HOPS": "1",
        "REDIS_SSL_CERT_REQS": "none",
    }
    stack = Platform(directory, platform_environment(config), server, router)
    admin = psycopg2.connect(POSTGRES_ADMIN_DSN, connect_timeout=3)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{database}"')
        server.start()
        release = stack.run("release", "start", "release")
        assert release.wait(120) == 0, release.log_path.read_text(errors="replace")
        router.start()
        stack.start_web_and_workers("honcho")
        yield stack
    finally:
        for run in stack.runs:
            run.kill()
        router.stop()
        server.stop()
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


@pytest.fixture(autouse=True)
def _platform_logs(platform: Platform, process_logs: list[Path]) -> None:
    """Every log of the stack goes with a failing test's report."""
    process_logs.extend(platform.logs)


def _wait_ended(client: RouterClient, task_id: str, timeout: float) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        answer = client.request("GET", f"/tasks/{task_id}")
        assert answer.status == 200, (task_id, answer.status, answer.body)
        return answer.body if answer.body["status"] in TERMINAL else None

    return wait_until(ended, timeout, f"task {task_id} to end", interval=0.2)


def _wait_drained(client: RouterClient, timeout: float) -> None:
    """Until no task waits on any queue and none runs."""

    def drained() -> bool:
        health = client.request("GET", "/health").body
        if health.get("status") != "healthy" or any(health["queues"].values()):
            return False
        return client.request("GET", "/tasks/").body["count"] == 0

    wait_until(drained, timeout, "every queue to drain", interval=0.5)


def test_old_clients_get_the_old_answers_through_the_router(platform: Platform) -> None:
    with platform.client() as client:
        submitted = platform.submit_add(client, 7, 8)
        assert submitted.status == 202, submitted.body
        assert submitted.body["status"] == "submitted" and submitted.body["task_id"]
        added = _wait_ended(client, submitted.body["task_id"], 30)
        assert (added["status"], added["result"], added["error"]) == ("completed", 15, None)

        slept = client.request("POST", "/tasks/test/sleep?seconds=2")
        assert slept.status == 202, slept.body
        long = client.request("POST", "/tasks/test/long")
        assert long.status == 202, long.body
        long_id = long.body["task_id"]
        running = wait_until(
            lambda: (view := client.request("GET", f"/tasks/{long_id}").body)["status"] == "started"
            and 0 < ((view.get("progress") or {}).get("percent") or 0) < 100
            and view,
            30,
            "test.long to report progress while it runs",
            interval=0.2,
        )
        assert running["progress"]["stage"] in LONG_STAGES, running

        sleep_view = _wait_ended(client, slept.body["task_id"], 30)
        assert (sleep_view["status"], sleep_view["result"]) == ("completed", "Slept for 2 seconds")
        long_view = _wait_ended(client, long_id, 40)
        assert long_view["status"] == "completed", long_view
        assert long_view["result"] == {"percent": 100, "progress": LONG_STAGES, "status": "completed"}

        health = client.request("GET", "/health")
        assert health.status == 200, health.body
        assert (health.body["status"], health.body["database"], health.body["redis"]) == (
            "healthy", "connected", "connected"
        )


def test_3000_submissions_from_30_clients_in_under_a_minute_all_complete(platform: Platform) -> None:
    clients, per_client = 30, 100

    def submit_all(index: int) -> list[tuple[int, Any, int]]:
        client = platform.client(f"127.0.0.{index + 2}")
        answers = []
        try:
            for k in range(per_client):
                x, y = 1_000 * index + k, 7 * k + index
                answer = platform.submit_add(client, x, y)
                outcome = answer.body["task_id"] if answer.status == 202 else answer.body
                answers.append((answer.status, outcome, x + y))
        finally:
            client.close()
        return answers

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        results = [answer for answers in pool.map(submit_all, range(clients)) for answer in answers]
    elapsed = time.monotonic() - started
    refused = [(status, body) for status, body, _ in results if status != 202]
    assert not refused, f"{len(refused)} of {len(results)} submissions refused, e.g. {refused[:3]}"
    assert len(results) == clients * per_client
    log.info("%d submissions from %d clients in %.1f s", len(results), clients, elapsed)
    assert elapsed < 60, f"3,000 submissions took {elapsed:.1f} s"

    with platform.client() as client:
        _wait_drained(client, 120)

    def check(chunk: list[tuple[int, Any, int]]) -> list[str]:
        client = platform.client()
        wrong = []
        try:
            for _, task_id, expected in chunk:
                view = _wait_ended(client, task_id, 30)
                if (view["status"], view["result"], view["error"]) != ("completed", expected, None):
                    wrong.append(f"{task_id}: {view}")
        finally:
            client.close()
        return wrong

    with ThreadPoolExecutor(10) as pool:
        wrong = [line for lines in pool.map(check, [results[i::10] for i in range(10)]) for line in lines]
    assert not wrong, f"{len(wrong)} tasks did not complete with x + y, e.g. {wrong[:3]}"


def test_one_clients_burst_is_limited_and_another_client_is_not(platform: Platform) -> None:
    burst_threads, burst_limit = 8, 2_000
    limited = threading.Event()
    counts = {"accepted": 0, "accepted_when_first_limited": None}
    refusals: list[Answer] = []
    unexpected: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def burst(index: int) -> None:
        # One client (one address) on several connections; it also sends an X-Forwarded-For of
        # its own making, which the trusted hop count must not believe.
        client = platform.client("127.0.0.40")
        try:
            k = 0
            while not limited.is_set():
                spoofed = f"198.51.100.{random.randrange(1, 255)}"
                answer = platform.submit_add(client, 100_000 + index, k, {"X-Forwarded-For": spoofed})
                k += 1
                with lock:
                    if answer.status == 202:
                        counts["accepted"] += 1
                        if counts["accepted"] > 4 * burst_limit:
                            unexpected.append((0, "never limited"))
                            limited.set()
                    elif answer.status == 429:
                        if counts["accepted_when_first_limited"] is None:
                            counts["accepted_when_first_limited"] = counts["accepted"]
                        refusals.append(answer)
                        limited.set()
                    else:
                        unexpected.append((answer.status, answer.body))
                        limited.set()
        finally:
            client.close()

    other_answers: list[Answer] = []

    def other_client() -> None:
        client = platform.client("127.0.0.41")
        try:
            k = 0
            while not limited.is_set() and k < 500:
                other_answers.append(platform.submit_add(client, 200_000, k))
                k += 1
                time.sleep(0.2)
            for extra in range(20):  # after the burst client was refused
                other_answers.append(platform.submit_add(client, 300_000, extra))
        finally:
            client.close()

    started = time.monotonic()
    with ThreadPoolExecutor(burst_threads + 1) as pool:
        futures = [pool.submit(burst, i) for i in range(burst_threads)] + [pool.submit(other_client)]
        for future in futures:
            future.result(timeout=180)
    log.info("burst: %s accepted in %.1f s before the first 429", counts, time.monotonic() - started)

    assert not unexpected, unexpected[:3]
    assert refusals, "the burst client was never refused"
    assert counts["accepted"] >= burst_limit, counts
    assert counts["accepted_when_first_limited"] >= burst_limit - burst_threads, counts
    refusal = refusals[0]
    assert refusal.body["error"] and refusal.body["message"], refusal.body
    retry_after = refusal.header("Retry-After")
    assert retry_after is not None and retry_after.isdigit() and 1 <= int(retry_after) <= 60, refusal.headers
    for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
        assert refusal.header(name) is not None, (name, refusal.headers)
    other_statuses = [answer.status for answer in other_answers]
    assert other_statuses and set(other_statuses) == {202}, other_statuses


def _ended_completed_adds(client: RouterClient) -> float | None:
    answer = client.request("GET", "/metrics")
    assert answer.status == 200, answer.body
    for match in ENDED_METRIC.finditer(answer.body):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if labels.get("type") == "test.add" and labels.get("outcome") == "completed":
            return float(match["value"])
    return None


def test_metrics_count_every_ended_add_the_same_on_every_scrape(platform: Platform) -> None:
    with platform.client() as client:
        _wait_drained(client, 120)
        expected = len(platform.accepted_adds)
        assert expected >= 3_000, "run with the submission tests before it"
        wait_until(
            lambda: _ended_completed_adds(client) == expected, 15, f"/metrics to count {expected} completed adds"
        )
        readings = []
        for _ in range(30):  # new connections, so that both web processes answer some
            with platform.client() as scraper:
                readings.append(_ended_completed_adds(scraper))
        assert set(readings) == {expected}, readings


def test_a_request_id_from_the_router_reaches_the_web_and_worker_logs(platform: Platform) -> None:
    with platform.client("127.0.0.50") as client:
        request_id = uuid.uuid4().hex
        answer = platform.submit_add(client, 5, 6, {"X-Request-Id": request_id})
        assert answer.status == 202, answer.body
        assert answer.header("X-Request-Id") == request_id, answer.headers
        task_id = answer.body["task_id"]
        assert _wait_ended(client, task_id, 30)["status"] == "completed"

        def logged(process_type: str) -> list[str]:
            return [
                f"{name} | {text}" for name, text in platform.honcho.lines(process_type)
                if request_id in text and task_id in text
            ]

        assert wait_until(lambda: logged("web"), 10, "a web log line with the request id and the task id")
        assert wait_until(lambda: logged("worker"), 10, "a worker log line with the request id and the task id")

        # Without one from the client, the router's own id is the one the app keeps.
        made = platform.submit_add(client, 6, 7)
        router_id = made.header("X-Request-Id") or ""
        assert re.fullmatch(r"[0-9a-f]{32}", router_id), made.headers
        access_log = platform.router.directory / "nginx-access.log"
        assert wait_until(lambda: f"request_id={router_id}" in access_log.read_text(), 5, "the router to log its id")


def test_a_platform_restart_with_tasks_in_flight_loses_no_task(platform: Platform, process_logs: list[Path]) -> None:
    submissions = [
        ("sleep", {"seconds": 20}), ("sleep", {"seconds": 12}), ("long", {}),  # running at the SIGTERM
        ("sleep", {"seconds": 3}), ("long", {}), ("sleep", {"seconds": 5}), ("add", {"x": 1, "y": 2}),  # waiting
    ]
    accepted = {}
    with platform.client("127.0.0.60") as client:
        for kind, params in submissions:
            answer = client.request("POST", f"/tasks/test/{kind}", body=params or None)
            assert answer.status == 202, answer.body
            accepted[answer.body["task_id"]] = (kind, params)
        running = wait_until(
            lambda: len(tasks := client.request("GET", "/tasks/").body["tasks"]) == WORKERS
            and {task["task_id"] for task in tasks},
            30,
            f"{WORKERS} tasks to be running",
        )

    started = time.monotonic()
    killed = platform.honcho.stop_like_a_platform()
    log.info("stopped %.1f s after SIGTERM; SIGKILLed: %s", time.monotonic() - started, killed)
    assert not killed, f"processes still running {PLATFORM_GRACE_SECONDS} s after the SIGTERM: {killed}"

    process_logs.append(platform.directory / "honcho-restart.log")
    platform.start_web_and_workers("honcho-restart")
    with platform.client("127.0.0.60") as client:
        views = {task_id: _wait_ended(client, task_id, 120) for task_id in accepted}
        for task_id, view in views.items():
            if view["status"] != "completed":
                assert view["error"], f"{accepted[task_id]} ended {view['status']} without a reason: {view}"
        add = next(view for task_id, view in views.items() if accepted[task_id][0] == "add")
        assert (add["status"], add["result"]) == ("completed", 3), add
        # Those running at the SIGTERM fit in the workers' shutdown grace (25 s): they finished.
        for task_id in running:
            assert views[task_id]["status"] == "completed", (accepted[task_id], views[task_id])
        _wait_drained(client, 30)
