"""A Redis that fails over: a master, two replicas and three sentinels, each a system
`redis-server` (`--sentinel` for the sentinels) on a spare port with its own directory.

The sentinels decide quickly (down after 1 s, failover timeout 5 s): that is the Redis side
of a test, not a setting of ours. `kill_master` SIGKILLs whichever server is master now;
`cut_off_replicas` first makes the master the only one holding what it takes next.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.support.ports import free_port
from tests.support.redis_server import pings
from tests.support.waiting import wait_until

SERVICE = "trustcard"
DOWN_AFTER_MS = 1_000
FAILOVER_TIMEOUT_MS = 5_000
START_TIMEOUT = 20.0


def system_redis_server() -> str:
    """Debian's redis-server: the one that also runs as a sentinel."""
    binary = shutil.which("redis-server")
    assert binary, "the Sentinel tests need the system's redis-server (apt-get install redis-server)"
    return binary


@dataclass
class Node:
    """One redis-server process (data node or sentinel)."""

    name: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=2, decode_responses=True)

    def start(self, config: str, sentinel: bool = False) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config_path = self.directory / "redis.conf"
        config_path.write_text(config)  # a sentinel rewrites its own config file, so each has one
        command = [system_redis_server(), str(config_path), *(["--sentinel"] if sentinel else [])]
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        client = self.client()
        try:
            wait_until(lambda: self.process.poll() is not None or pings(client), START_TIMEOUT, f"{self.name} up")
        finally:
            client.close()
        assert self.process.poll() is None, (self.directory / "server.log").read_text(errors="replace")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


@dataclass
class SentinelCluster:
    data: list[Node] = field(default_factory=list)
    sentinels: list[Node] = field(default_factory=list)

    @classmethod
    def started(cls, directory: Path) -> SentinelCluster:
        """Master first, then its replicas, then sentinels that have seen all of them."""
        cluster = cls()
        try:
            master = cls._data_node(directory, "master")
            master.start(cls._data_config(master))
            cluster.data.append(master)
            for index in (1, 2):
                replica = cls._data_node(directory, f"replica-{index}")
                replica.start(cls._data_config(replica) + f"replicaof 127.0.0.1 {master.port}\n")
                cluster.data.append(replica)
            for index in (1, 2, 3):
                sentinel = Node(f"sentinel-{index}", free_port(), directory / f"sentinel-{index}")
                sentinel.start(cls._sentinel_config(sentinel, master.port), sentinel=True)
                cluster.sentinels.append(sentinel)
            wait_until(cluster._settled, START_TIMEOUT, "sentinels to see two replicas and each other")
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @staticmethod
    def _data_node(directory: Path, name: str) -> Node:
        return Node(name, free_port(), directory / name)

    @staticmethod
    def _data_config(node: Node) -> str:
        return (f"port {node.port}\nbind 127.0.0.1\ndir {node.directory}\nsave \"\"\nappendonly no\n"
                "maxmemory-policy noeviction\nrepl-diskless-sync yes\nrepl-diskless-sync-delay 0\n")

    @staticmethod
    def _sentinel_config(node: Node, master_port: int) -> str:
        return (f"port {node.port}\nbind 127.0.0.1\ndir {node.directory}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {SERVICE} 2\n")

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def _settled(self) -> bool:
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                state = client.sentinel_master(SERVICE)
            except redis.exceptions.RedisError:
                return False
            finally:
                client.close()
            if int(state["num-slaves"]) < 2 or int(state["num-other-sentinels"]) < 2:
                return False
        return True

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            client = sentinel.client()
            try:
                address = client.sentinel_get_master_addr_by_name(SERVICE)
                if address:
                    return int(address[1])
            except redis.exceptions.RedisError:
                continue
            finally:
                client.close()
        return None

    def master(self) -> Node:
        port = self.master_port()
        return next(node for node in self.data if node.port == port)

    def kill_master(self) -> Node:
        """SIGKILL the current master (no final save, no goodbye to its replicas)."""
        master = self.master()
        master.kill()
        return master

    def cut_off_replicas(self) -> None:
        """The replicas stop hearing from the master, as in a network partition: frozen
        (SIGSTOP), and the master drops its links to them, so what it takes from now on
        reaches no replica. The master goes on answering its clients."""
        master = self.master()
        for node in self.data:
            if node is not master and node.process is not None:
                node.process.send_signal(signal.SIGSTOP)
        client = master.client()
        try:
            client.execute_command("CLIENT", "KILL", "TYPE", "replica")
        finally:
            client.close()

    def resume_replicas(self) -> None:
        for node in self.data:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGCONT)

    def wait_failed_over(self, old: Node, timeout: float) -> Node:
        """Until the sentinels name another master that answers as one."""
        def promoted() -> Node | None:
            port = self.master_port()
            if port is None or port == old.port:
                return None
            node = next(node for node in self.data if node.port == port)
            client = node.client()
            try:
                return node if client.info("replication")["role"] == "master" else None
            except redis.exceptions.RedisError:
                return None
            finally:
                client.close()

        return wait_until(promoted, timeout, "the sentinels to promote a replica")

    def stop(self) -> None:
        self.resume_replicas()  # a frozen process takes its SIGKILL all the same; this keeps the order plain
        for node in [*self.sentinels, *self.data]:
            node.kill()
