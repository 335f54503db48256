"""The whole service as a deploy runs it, for the scripts (load, fuzz, streams bench): a
private redis-server, the Procfile's release line on a SQLite file, then its web line
and worker lines, every process's output in one log file, all stopped at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.paths import ROOT
from tests.support.ports import free_port
from tests.support.processes import ProcessGroup
from tests.support.procfile import procfile_command
from tests.support.redis_server import PrivateRedis

STOP_GRACE = 40.0
"""A worker hands a running job back within its shutdown grace (25 s by default)."""
LOG_TAIL = 4_000


class StackFailed(Exception):
    """The stack did not start: the release step failed, a process exited, or it never got healthy."""


@dataclass
class ProcfileStack:
    redis: PrivateRedis
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    """The environment every line runs with (for a script that restarts a line)."""
    web: ProcessGroup | None = None
    workers: list[ProcessGroup] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        return self.redis.url

    def tail(self) -> str:
        """The end of the web's and workers' log."""
        return self.log_path.read_text(errors="replace")[-LOG_TAIL:] if self.log_path.exists() else "(no log)"

    def wait_healthy(self, workers: int = 1, timeout: float = 60) -> None:
        """Until /health answers 200 with `workers` workers registered; a process that exits fails at once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(process.poll() is not None for process in [self.web, *self.workers] if process is not None):
                raise StackFailed("a process of the stack exited while starting:\n" + self.tail())
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if int(json.loads(answer.read())["workers"]) >= workers:
                        return
            except (OSError, ValueError, KeyError):  # not up yet (urllib's HTTPError for a 503 is an OSError)
                pass
            time.sleep(0.2)
        raise StackFailed(f"the stack at {self.url} was not healthy with {workers} worker(s) after {timeout:.0f} s:\n"
                          + self.tail())

    def stop(self) -> None:
        """SIGTERM every process group at once, then wait for each (SIGKILL after the grace)."""
        started = [process for process in [*self.workers, self.web] if process is not None]
        for process in started:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for process in started:
            process.stop(grace=STOP_GRACE)
        self.redis.stop()


@contextmanager
def procfile_stack(
    scratch: Path, env: dict[str, str], workers: int = 1, wait: bool = True, appendonly: bool = False
) -> Iterator[ProcfileStack]:
    """Start the stack in `scratch` with `env` on top of this process's environment (REDIS_URL,
    DATABASE_URL and PORT are the stack's own); with `wait`, yield it once it is healthy.
    `appendonly`: the Redis keeps an append-only file, so that a restart of it keeps its data."""
    redis = PrivateRedis.started(scratch / "redis", appendonly=appendonly)
    stack = ProcfileStack(redis, free_port(), scratch / "stack.log")
    full_env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{scratch}/stack.db",
        **env,
        "REDIS_URL": redis.url,
        "PORT": str(stack.port),
    }
    stack.env = full_env
    try:
        release = subprocess.run(procfile_command("release"), cwd=ROOT, env=full_env,
                                 capture_output=True, text=True, timeout=120)
        if release.returncode != 0:
            raise StackFailed(f"the release step failed: {release.stderr.strip()}")
        stack.web = ProcessGroup.start("web", procfile_command("web"), full_env, stack.log_path)
        stack.workers = [ProcessGroup.start(f"worker-{index}", procfile_command("worker"), full_env, stack.log_path)
                         for index in range(workers)]
        if wait:
            stack.wait_healthy(workers)
        yield stack
    finally:
        stack.stop()
