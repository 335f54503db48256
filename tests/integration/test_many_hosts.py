"""Web and workers on three hosts (network namespaces on a bridge), and a worker host cut off.

Host 1 runs the Procfile's web line, hosts 2 and 3 its worker line; each has its own working
directory and TMPDIR, and reaches only Redis and PostgreSQL, over the bridge
(`tests/support/netns_hosts.py`). Tasks and an analysis run across both worker hosts. Then
one worker host's link goes down while it runs a long task: the task is settled (failed as
abandoned: `test.sleep` has no retries) within two minutes by the other host's worker, with
nobody reading it, and the other host carries on; and when the link comes back the cut
worker registers again and takes new work, and its late "finished" for the settled task is
discarded instead of overwriting it.

Needs root (network namespaces). The run takes about two and a half minutes: the task's
heartbeat has to run out (65 s after the last one) before it counts as abandoned.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from rq.worker import Worker

from tests.support.netns_hosts import (
    POSTGRES_PORT,
    REDIS_PORT,
    SERVICES_ADDRESS,
    Bridge,
    BridgeClient,
    Host,
    TcpForwarder,
    hosts_on_a_bridge,
    ip,
)
from tests.support.processes import ProcessGroup
from tests.support.procfile import procfile_command
from tests.support.redis_server import PrivateRedis
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]  # the cut alone takes about 100 s

WEB_HOST, WORKER_A, WORKER_B = "web-host", "worker-a", "worker-b"
WEB_PORT = 8000
ENDED = ("completed", "failed", "cancelled")
SETTLED_WITHIN = 120.0
"""The promise: a cut worker's task is settled within two minutes."""
BUSY_KEY_SECONDS = 65
"""How long a busy worker's key lives after its last heartbeat (5 s + 60 s, RQ's margin); an
idle one's lives 95 s, and a job's first busy heartbeat comes a few seconds into it."""
CUT_TASK_SECONDS = 105
"""Longer than the cut worker's key lives after the cut plus the settling: it finishes after
the link is back, so its end arrives late, on a working connection."""


@dataclass
class Hosts:
    bridge: Bridge
    redis: redis.Redis
    client: BridgeClient
    workers: dict[str, ProcessGroup]

    def host(self, name: str) -> Host:
        return self.bridge.hosts[name]

    def worker_names(self) -> dict[str, str]:
        """Worker name -> host name, for the workers Redis knows now."""
        by_pid = {process.pid: host for host, process in self.workers.items()}
        return {worker.name: by_pid[worker.pid] for worker in Worker.all(connection=self.redis) if worker.pid in by_pid}

    def submit(self, path: str, body: Any = None) -> str:
        return str(self.client.post(path, body)["task_id"])

    def task(self, task_id: str) -> dict[str, Any]:
        return dict(self.client.get(f"/tasks/{task_id}"))

    def wait_ended(self, task_ids: list[str], timeout: float = 60) -> dict[str, dict[str, Any]]:
        views: dict[str, dict[str, Any]] = {}

        def all_ended() -> bool:
            for task_id in task_ids:
                if task_id not in views or views[task_id]["status"] not in ENDED:
                    views[task_id] = self.task(task_id)
            return all(view["status"] in ENDED for view in views.values())

        wait_until(all_ended, timeout, f"tasks to end (last: {views})", interval=0.2)
        return views


def bridge_url(url: str) -> str:
    """The run's PostgreSQL database URL, pointed at the forwarder on the bridge."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{SERVICES_ADDRESS}:{POSTGRES_PORT}"))


@pytest.fixture
def hosts(tmp_path: Path, database_url: str, process_logs: list[Path]) -> Iterator[Hosts]:
    if os.geteuid() != 0:
        pytest.fail("the multi-host test builds network namespaces: it needs root (CI runs as root)")
    postgres = urlsplit(database_url)
    with hosts_on_a_bridge(tmp_path / "hosts", [WEB_HOST, WORKER_A, WORKER_B]) as bridge:
        server = PrivateRedis(
            REDIS_PORT, tmp_path / "redis", bind=SERVICES_ADDRESS,
            launcher=("ip", "netns", "exec", bridge.services_namespace), unix_socket=tmp_path / "redis.sock",
        )
        server.data_dir.mkdir()
        forwarder = TcpForwarder(bridge.services_namespace, (SERVICES_ADDRESS, POSTGRES_PORT),
                                 (postgres.hostname or "127.0.0.1", postgres.port or 5432))
        connection = server.local_client(socket_timeout=10)
        processes: list[ProcessGroup] = []
        try:
            server.start()
            env = {
                **os.environ,
                "REDIS_URL": f"redis://{SERVICES_ADDRESS}:{REDIS_PORT}/0",
                "DATABASE_URL": bridge_url(database_url),
                "PORT": str(WEB_PORT),
            }
            logs = tmp_path / "logs"
            logs.mkdir()
            process_logs.extend(logs / f"{name}.log" for name in (WEB_HOST, WORKER_A, WORKER_B))
            processes.append(bridge.hosts[WEB_HOST].start("web", procfile_command("web"), env, logs / f"{WEB_HOST}.log"))
            workers = {
                name: bridge.hosts[name].start(name, procfile_command("worker"), env, logs / f"{name}.log")
                for name in (WORKER_A, WORKER_B)
            }
            processes.extend(workers.values())
            client = BridgeClient(bridge.services_namespace, bridge.hosts[WEB_HOST].address, WEB_PORT)
            yield Hosts(bridge, connection, client, workers)
        finally:
            bridge.reconnect_all()
            for process in processes:
                process.kill()
            forwarder.close()
            connection.close()
            server.stop()
    wait_until(lambda: not bridge.leftovers(), 15, f"the run's links and namespaces to go: {bridge.leftovers()}")


def healthy_with(hosts: Hosts, workers: int) -> bool:
    status, body = hosts.client.request("GET", "/health")
    return status == 200 and body["workers"] == workers


def test_tasks_and_an_analysis_run_across_worker_hosts_and_a_cut_one_is_settled_and_rejoins(hosts: Hosts) -> None:
    began = time.monotonic()
    for name in (WEB_HOST, WORKER_A, WORKER_B):  # only the bridge's subnet: no way out of it
        routes = ip("-n", hosts.host(name).namespace, "route", "show").stdout
        assert "default" not in routes and routes.strip().startswith("10.77.0.0/24"), routes
    wait_until(lambda: healthy_with(hosts, 2), 90, "the web on host 1 to answer with both workers",
               ignore=(OSError,), interval=0.3)
    names = wait_until(lambda: (found := hosts.worker_names()) and len(found) == 2 and found, 30, "two workers")

    # --- work spreads over both worker hosts -------------------------------------------------
    adds = [hosts.submit(f"/tasks/test/add?x={n}&y=1") for n in range(12)]
    sleeps = [hosts.submit("/tasks/test/sleep?seconds=1") for _ in range(4)]
    long_task = hosts.submit("/tasks/test/long")
    shortcode = "H" + uuid.uuid4().hex[:10]
    analysis = hosts.client.post("/analyses", {"url": f"https://www.instagram.com/p/{shortcode}/"})
    views = hosts.wait_ended([*adds, *sleeps, long_task], timeout=60)
    assert [views[task]["result"] for task in adds] == [n + 1 for n in range(12)]
    assert {views[task]["result"] for task in sleeps} == {"Slept for 1 seconds"}
    assert views[long_task]["result"]["percent"] == 100
    assert {view["status"] for view in views.values()} == {"completed"}
    ran_on = {names[view["worker"]] for view in views.values()}
    assert ran_on == {WORKER_A, WORKER_B}, f"one host did all the work: {ran_on}"
    record = wait_until(lambda: (a := hosts.client.get(f"/analyses/{analysis['id']}"))["status"] in ENDED and a,
                        30, "the analysis to end")
    assert record["status"] == "completed", record
    assert all(stage["worker"] in names for stage in record["stages"]), record["stages"]
    before_cut = {task: hosts.task(task) for task in views}

    # --- one worker host's link goes down while it runs a long task -------------------------
    cut_task = hosts.submit(f"/tasks/test/sleep?seconds={CUT_TASK_SECONDS}")
    started = wait_until(lambda: (v := hosts.task(cut_task))["status"] == "started" and v, 30, "the long task to start")
    cut_worker = started["worker"]
    cut_host = names[cut_worker]
    other_host = WORKER_B if cut_host == WORKER_A else WORKER_A
    key = Worker.redis_worker_namespace_prefix + cut_worker
    wait_until(lambda: 0 < hosts.redis.ttl(key) <= BUSY_KEY_SECONDS, 30, "the busy worker's first job heartbeat")
    hosts.host(cut_host).cut()
    cut_at = time.monotonic()
    print(f"\ncut {cut_host} running {cut_task}; its worker's key lives {hosts.redis.ttl(key)} s more")

    during = [hosts.submit(f"/tasks/test/add?x={n}&y=100") for n in range(5)]
    done = hosts.wait_ended(during, timeout=30)
    assert [done[task]["result"] for task in during] == [n + 100 for n in range(5)]
    assert {names[view["worker"]] for view in done.values()} == {other_host}

    # Read in Redis, not through the API: the API's read would settle it itself, and the
    # promise holds for a task nobody reads (the live worker's abandoned-task check).
    job_key = f"rq:job:{cut_task}"
    wait_until(lambda: hosts.redis.hget(job_key, "status") != b"started", SETTLED_WITHIN,
               f"the cut host's task to be settled (last: {hosts.redis.hget(job_key, 'status')!r})", interval=0.5)
    settled_after = time.monotonic() - cut_at
    settled = hosts.task(cut_task)
    assert settled["status"] == "failed" and settled["error"].startswith("Abandoned"), settled
    assert settled_after < SETTLED_WITHIN
    print(f"cut worker's task settled {settled_after:.0f} s after the cut: {settled['error']}")
    more = [hosts.submit(f"/tasks/test/add?x={n}&y=200") for n in range(3)]
    assert {names[view["worker"]] for view in hosts.wait_ended(more, timeout=30).values()} == {other_host}

    # --- the link comes back: the cut worker rejoins; its late end does not overwrite -------
    hosts.host(cut_host).reconnect()
    wait_until(lambda: hosts.redis.sismember("rq:workers", key) and hosts.redis.hget(key, "queues")
               and hosts.redis.ttl(key) > 0, 30, "the cut worker to register again, whole")
    late = CUT_TASK_SECONDS - (time.monotonic() - cut_at) + 5  # its job ends, then writes (or not)
    wait_until(lambda: "this end is discarded" in hosts.workers[cut_host].log(), max(late, 5) + 20,
               "the cut worker to finish its task and discard the late end", interval=0.5)
    assert hosts.task(cut_task) == settled, "the late end overwrote the settled task"
    assert hosts.redis.zscore(f"rq:finished:{settled['queue']}", cut_task) is None

    after = [hosts.submit("/tasks/test/sleep?seconds=1") for _ in range(6)]
    views_after = hosts.wait_ended(after, timeout=60)
    assert {view["status"] for view in views_after.values()} == {"completed"}
    assert {names[view["worker"]] for view in views_after.values()} == {WORKER_A, WORKER_B}
    assert {task: hosts.task(task) for task in before_cut} == before_cut, "finished work changed (ran again?)"
    assert healthy_with(hosts, 2)
    print(f"multi-host run took {time.monotonic() - began:.0f} s")
