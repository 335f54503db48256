"""Several hosts on one machine: Linux network namespaces on a bridge, for the multi-host test.

Each host is a network namespace with one veth link to a bridge, its own working directory
(a deploy of the project: links to its files, no `.env`, no virtualenv) and its own TMPDIR.
The services live in one more namespace, `svc`: a private redis-server bound to its bridge
address, and a forwarder to the machine's PostgreSQL (which listens on 127.0.0.1 only). The
root namespace has no address on the bridge, so nothing else of it (the machine's Redis, its
other listeners) is reachable from a host: what a host sees is only Redis and PostgreSQL.

The test process itself stays in the root namespace: it reads Redis through the server's
unix socket (a file, which namespaces do not hide) and talks HTTP to the web over the bridge
from the `svc` namespace (`inside`, for the one thread that connects). A cut is `ip link
set <host's veth> down` on the bridge side: the host keeps its address and its sockets, and
its packets go nowhere, as when a cable or a switch port dies.

Every name carries a token unique to the run; `hosts_on_a_bridge` tears everything down
(processes first, then namespaces, their veths and the bridge), also when the test fails.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import logging
import os
import select
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.paths import ROOT
from tests.support.processes import ProcessGroup

log = logging.getLogger(__name__)

SUBNET = "10.77.0"
"""The bridge's subnet; private to this run, since the root namespace has no address on it."""
SERVICES_ADDRESS = f"{SUBNET}.1"
REDIS_PORT = 6379
POSTGRES_PORT = 5432
_CLONE_NEWNET = 0x40000000
_NOT_DEPLOYED = {".venv", ".git", ".env", ".ci", "__pycache__", ".pytest_cache"}


def ip(*words: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `ip ...` (iproute2); with `check`, a failure raises naming the command and its error."""
    done = subprocess.run(["ip", *words], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(words)}: {done.stderr.strip()}")
    return done


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


@contextmanager
def inside(namespace: str) -> Iterator[None]:
    """The calling thread in `namespace` (sockets made meanwhile stay there), then back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


@dataclass
class Host:
    """One namespace on the bridge: its name, address, veth (bridge side) and directories."""

    name: str
    namespace: str
    address: str
    veth: str
    directory: Path

    @property
    def tmpdir(self) -> Path:
        return self.directory / "tmp"

    def command(self, words: list[str]) -> list[str]:
        """`words` run on this host."""
        return ["ip", "netns", "exec", self.namespace, *words]

    def start(self, name: str, words: list[str], env: dict[str, str], log_path: Path) -> ProcessGroup:
        """A process on this host, started in its working directory with its own TMPDIR."""
        return ProcessGroup.start(name, self.command(words), {**env, "TMPDIR": str(self.tmpdir)}, log_path,
                                  cwd=self.directory)

    def cut(self) -> None:
        """Its link goes down: its packets are dropped until `reconnect`."""
        ip("link", "set", self.veth, "down")

    def reconnect(self) -> None:
        ip("link", "set", self.veth, "up")


class TcpForwarder:
    """Listens inside a namespace, connects from the root one: PostgreSQL (127.0.0.1 only)
    reached over the bridge, and nothing else of the root namespace with it."""

    def __init__(self, namespace: str, listen: tuple[str, int], target: tuple[str, int]) -> None:
        with inside(namespace):
            self.server = socket.create_server(listen, backlog=64)
        self.target = target
        self._closing = False
        self._sockets: set[socket.socket] = set()
        self._pipes: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="tcp-forwarder", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            pipe = threading.Thread(target=self._pipe, args=(client, upstream), daemon=True)
            with self._lock:
                self._sockets.update((client, upstream))
                self._pipes.append(pipe)
            pipe.start()

    def _pipe(self, one: socket.socket, other: socket.socket) -> None:
        """Both directions in one thread, until either side closes."""
        try:
            while not self._closing:
                ready, _, _ = select.select([one, other], [], [], 0.5)
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    (other if source is one else one).sendall(data)
        except OSError:
            return
        finally:
            for sock in (one, other):
                sock.close()
            with self._lock:
                self._sockets.difference_update((one, other))

    def close(self) -> None:
        """Stop, and close every socket: a socket made inside a namespace keeps it alive."""
        self._closing = True
        with suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        with self._lock:
            for sock in list(self._sockets):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            pipes = list(self._pipes)
        self._thread.join(5)
        for pipe in pipes:
            pipe.join(5)


@dataclass
class Bridge:
    """The network of one run: the bridge, the services' namespace and the hosts."""

    token: str
    scratch: Path
    hosts: dict[str, Host] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    veths: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"tc{self.token}-br"

    @property
    def services_namespace(self) -> str:
        return f"tc{self.token}-svc"

    def _namespace(self, suffix: str, address: str) -> tuple[str, str]:
        """A namespace with lo up and one veth to the bridge at `address`; its name and the veth's."""
        namespace, veth = f"tc{self.token}-{suffix}", f"tc{self.token}-{suffix}"
        ip("netns", "add", namespace)
        self.namespaces.append(namespace)
        ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
        self.veths.append(veth)
        ip("link", "set", f"{veth}p", "netns", namespace)
        ip("-n", namespace, "link", "set", f"{veth}p", "name", "eth0")
        ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", namespace, "link", "set", "lo", "up")
        ip("-n", namespace, "link", "set", "eth0", "up")
        ip("link", "set", veth, "master", self.name)
        ip("link", "set", veth, "up")
        return namespace, veth

    def build(self, host_names: list[str]) -> None:
        ip("link", "add", self.name, "type", "bridge")
        ip("link", "set", self.name, "up")
        self._namespace("svc", SERVICES_ADDRESS)
        for index, host_name in enumerate(host_names, start=1):
            address = f"{SUBNET}.{10 + index}"
            namespace, veth = self._namespace(f"h{index}", address)
            directory = self.scratch / host_name
            deploy(directory)
            self.hosts[host_name] = Host(host_name, namespace, address, veth, directory)

    def reconnect_all(self) -> None:
        """Every link up: before processes stop, so their connections close both ways
        instead of lingering in the kernel, retransmitting to a host that cannot hear."""
        for host in self.hosts.values():
            ip("link", "set", host.veth, "up", check=False)

    def tear_down(self) -> None:
        """Each veth deleted (its pair goes with it, even if a lingering socket keeps its
        namespace alive a while longer), then the namespaces' names, then the bridge."""
        for veth in self.veths:
            ip("link", "delete", veth, check=False)
        for namespace in reversed(self.namespaces):
            ip("netns", "delete", namespace, check=False)
        ip("link", "delete", self.name, check=False)

    def leftovers(self) -> list[str]:
        """Links and namespaces of this run still there (none after `tear_down`, once the
        kernel has finished deleting them: it does so in the background)."""
        found = [line for line in ip("-o", "link", "show").stdout.splitlines() if f"tc{self.token}-" in line]
        found += [line for line in ip("netns", "list").stdout.splitlines() if f"tc{self.token}-" in line]
        return found


def deploy(directory: Path) -> None:
    """A host's working directory: the project's files as a deploy ships them (links here),
    without the checkout's `.env`, virtualenv or caches; and an empty TMPDIR."""
    directory.mkdir(parents=True)
    (directory / "tmp").mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in _NOT_DEPLOYED and not entry.name.endswith(".egg-info"):
            (directory / entry.name).symlink_to(entry)


@contextmanager
def hosts_on_a_bridge(scratch: Path, host_names: list[str]) -> Iterator[Bridge]:
    """`host_names` as namespaces on a new bridge, plus the services' namespace; all torn down after."""
    bridge = Bridge(uuid.uuid4().hex[:6], scratch)
    try:
        bridge.build(host_names)
        yield bridge
    finally:
        bridge.tear_down()


class BridgeClient:
    """HTTP to a host over the bridge, from the services' namespace: JSON in, status and JSON out."""

    def __init__(self, namespace: str, host: str, port: int, timeout: float = 10) -> None:
        self.namespace, self.host, self.port, self.timeout = namespace, host, port, timeout

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            with inside(self.namespace):
                connection.connect()
            payload = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        finally:
            connection.close()

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def post(self, path: str, body: Any = None) -> Any:
        status, answer = self.request("POST", path, body)
        assert status == 202, (path, status, answer)
        return answer
