"""Analyses end to end: real `rq worker` processes from the Procfile's line, real Redis, SQLite and PostgreSQL.

The tests register the probe stage (`tests.stage_probes`) on the `models` queue, in this
process and in the workers (through `probe_site/sitecustomize.py`), and steer it with files.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rq.worker import Worker

from tests import stage_probes
from tests.support.paths import ROOT
from tests.support.processes import ProcessGroup
from tests.support.procfile import procfile_command
from tests.support.stack import Stack, WorkerProcess
from tests.support.waiting import wait_until
from tests.support.migrations import upgrade
from trustcard.analyses import records
from trustcard.catalogue import QUEUE_NAMES
from trustcard.connections import redis_client
from trustcard.database import make_engine

pytestmark = pytest.mark.integration

PROBE_SITE = Path(__file__).parent / "probe_site"
ENDED = ("completed", "failed", "cancelled")


@pytest.fixture(params=["sqlite", "postgresql"])
def analysis_stack(
    request: pytest.FixtureRequest, make_stack: Callable[..., Stack], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Stack]:
    if request.param == "sqlite":
        database = f"sqlite:///{tmp_path / 'analyses.db'}"
        upgrade(database)
    else:
        database = request.getfixturevalue("database_url")
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    monkeypatch.setenv("TRUSTCARD_PROBE_DIR", str(probe_dir))
    stage_probes.register_probe(on_models=True)
    try:
        yield make_stack(
            DATABASE_URL=database,
            TRUSTCARD_PROBE_DIR=str(probe_dir),
            TRUSTCARD_PROBE_STAGE="models",
            PYTHONPATH=f"{PROBE_SITE}{os.pathsep}{ROOT}",
        )
    finally:
        stage_probes.unregister_probe()


def post() -> tuple[str, str]:
    shortcode = "T" + uuid.uuid4().hex[:10]
    return f"https://www.instagram.com/p/{shortcode}/", shortcode


def probe_file(kind: str, shortcode: str, text: str = "") -> Path:
    path = Path(os.environ["TRUSTCARD_PROBE_DIR"]) / f"{kind}-{shortcode}"
    path.write_text(text)
    return path


def submit(stack: Stack, url: str) -> dict[str, Any]:
    response = stack.client.post("/analyses", json={"url": url})
    assert response.status_code == 202, response.get_json()
    return dict(response.get_json())


def read(stack: Stack, analysis_id: str) -> dict[str, Any]:
    response = stack.client.get(f"/analyses/{analysis_id}")
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def wait_for(stack: Stack, analysis_id: str, condition: Callable[[dict[str, Any]], bool] = lambda a: a["status"] in ENDED,
             timeout: float = 30) -> dict[str, Any]:
    return wait_until(lambda: (analysis := read(stack, analysis_id)) and condition(analysis) and analysis,
                      timeout, f"analysis {analysis_id} (last: {read(stack, analysis_id)})")


def stage(analysis: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s for s in analysis["stages"] if s["name"] == name)


def worker_name(stack: Stack, worker: WorkerProcess) -> str:
    connection = redis_client(stack.settings)
    try:
        return next(w.name for w in Worker.all(connection=connection) if w.pid == worker.process.pid)
    finally:
        connection.close()


def start_pool(stack: Stack, queues: list[str]) -> WorkerProcess:
    """The Procfile's worker line with another queue list: a dedicated pool."""
    command = [word for word in procfile_command("worker") if word not in QUEUE_NAMES] + queues
    log_path = stack.log_dir / f"worker-{'-'.join(queues)}.log"
    stack.logs.append(log_path)
    group = ProcessGroup.start(log_path.stem, command, {**os.environ, **stack.env}, log_path)
    worker = WorkerProcess(group.name, group.process, group.log_path)
    stack.workers.append(worker)
    worker.wait_registered(stack.settings)
    return worker


def test_happy_path_every_stage_on_the_procfile_worker(analysis_stack: Stack) -> None:
    worker = analysis_stack.start_worker()
    url, shortcode = post()
    analysis = submit(analysis_stack, url.replace("www.", "m.").replace("/p/", "/reel/") + "?igsh=1")
    assert (analysis["url"], analysis["shortcode"]) == (url, shortcode)
    done = wait_for(analysis_stack, analysis["id"])
    assert done["status"] == "completed", done
    assert done["trust_score"] is None and done["error"] is None and done["progress"]["percent"] == 100
    name = worker_name(analysis_stack, worker)
    assert [(s["name"], s["status"], s["worker"], s["runs"]) for s in done["stages"]] == [
        (n, "completed", name, 1) for n in ("content", "ai_detection", "deepfake_detection", "fact_check", "probe", "trust")
    ]
    assert stage(done, "probe")["output"]["saw"] == ["ai_detection", "content", "deepfake_detection", "fact_check"]
    history = analysis_stack.client.get("/analyses", query_string={"url": url}).get_json()
    assert [a["id"] for a in history["analyses"]] == [analysis["id"]]


def test_invalid_urls_are_refused_with_what_is_wrong(analysis_stack: Stack) -> None:
    kinds = {
        "": "is empty", "www.instagram.com/p/A/": "has no scheme", "ftp://instagram.com/p/A/": "scheme 'ftp'",
        "https://u:p@instagram.com/p/A/": "credentials", "https://example.com/p/A/": "not Instagram",
        "https://instagram.com:81/p/A/": "port", "https://instagram.com/someone/": "is not a post",
        "https://instagram.com/p/": "has no shortcode", "https://instagram.com/p/A/B/": "more path",
        "https://instagram.com/p/A%20B/": "shortcode", "https://instagram.com/p/A B/": "spaces",
    }
    for url, problem in kinds.items():
        response = analysis_stack.client.post("/analyses", json={"url": url})
        assert response.status_code == 422, url
        assert problem in response.get_json()["problems"][0]["problem"], (url, response.get_json())


def test_a_failing_stage_then_a_retry_that_resumes_at_it(analysis_stack: Stack) -> None:
    analysis_stack.start_worker()
    url, shortcode = post()
    gate = probe_file("fail", shortcode)
    analysis = submit(analysis_stack, url)
    failed = wait_for(analysis_stack, analysis["id"])
    assert (failed["status"], failed["failed_stage"]) == ("failed", "probe"), failed
    assert failed["error"] == f"Stage probe failed: RuntimeError: probe refused {shortcode}"
    assert stage(failed, "trust")["status"] == "pending" and stage(failed, "fact_check")["output"]
    before = {s["name"]: s["started_at"] for s in failed["stages"]}
    gate.unlink()
    assert analysis_stack.client.post(f"/analyses/{analysis['id']}/retry").status_code == 202
    done = wait_for(analysis_stack, analysis["id"])
    assert done["status"] == "completed", done
    assert [s["runs"] for s in done["stages"]] == [1, 1, 1, 1, 2, 1]
    assert stage_probes.runs(shortcode) == 2
    for name in ("content", "ai_detection", "deepfake_detection", "fact_check"):
        assert stage(done, name)["started_at"] == before[name]  # not run again


def test_a_timed_out_stage_fails_the_analysis_with_the_reason(analysis_stack: Stack) -> None:
    analysis_stack.start_worker()
    url, shortcode = post()
    probe_file("sleep", shortcode, "20")
    failed = wait_for(analysis_stack, submit(analysis_stack, url)["id"])
    assert (failed["status"], failed["failed_stage"]) == ("failed", "probe"), failed
    assert stage(failed, "probe")["error"] == "timed out after 2 s"
    assert stage(failed, "fact_check")["status"] == "completed"


def test_a_duplicate_while_running_answers_the_running_analysis(analysis_stack: Stack) -> None:
    analysis_stack.start_worker()
    url, shortcode = post()
    probe_file("sleep", shortcode, "1")
    first = submit(analysis_stack, url)
    wait_for(analysis_stack, first["id"], lambda a: a["status"] == "running")
    again = analysis_stack.client.post("/analyses", json={"url": url.replace("/p/", "/tv/")})
    assert again.status_code == 200 and again.get_json()["id"] == first["id"]
    assert wait_for(analysis_stack, first["id"])["status"] == "completed"
    second = submit(analysis_stack, url)["id"]  # ended: a new analysis of the same post
    assert second != first["id"] and wait_for(analysis_stack, second)["status"] == "completed"


def test_cancel_mid_pipeline_stops_the_running_stage(analysis_stack: Stack) -> None:
    analysis_stack.start_worker()
    url, shortcode = post()
    probe_file("sleep", shortcode, "1.5")
    analysis = submit(analysis_stack, url)
    wait_for(analysis_stack, analysis["id"], lambda a: stage(a, "probe")["status"] == "running")
    response = analysis_stack.client.delete(f"/analyses/{analysis['id']}")
    assert response.status_code == 200
    cancelled = response.get_json()
    assert cancelled["status"] == "cancelled"
    assert [s["status"] for s in cancelled["stages"]] == ["completed"] * 4 + ["cancelled"] * 2
    row = records.read(make_engine(analysis_stack.env["DATABASE_URL"]), analysis["id"])
    assert row is not None
    probe_job = next(s["job_id"] for s in row.stages if s["name"] == "probe")
    assert analysis_stack.task(probe_job)["status"] == "cancelled"  # stopped by its worker
    after = read(analysis_stack, analysis["id"])
    assert after["status"] == "cancelled" and stage(after, "trust")["runs"] == 0
    assert stage(after, "probe")["output"] is None


def test_stages_spread_over_two_pools_each_on_its_own_queues(analysis_stack: Stack) -> None:
    models = start_pool(analysis_stack, ["models"])
    rest = start_pool(analysis_stack, [name for name in QUEUE_NAMES if name != "models"])
    url, _ = post()
    done = wait_for(analysis_stack, submit(analysis_stack, url)["id"])
    assert done["status"] == "completed", done
    models_name, rest_name = worker_name(analysis_stack, models), worker_name(analysis_stack, rest)
    for item in done["stages"]:
        assert item["worker"] == (models_name if item["queue"] == "models" else rest_name), item


def test_with_result_ttl_1_the_record_outlives_rq_results_and_a_redis_flush(make_stack: Callable[..., Stack], analysis_stack: Stack) -> None:
    stack = make_stack(**{**analysis_stack.env, "RESULT_TTL": "1"})
    stack.start_worker()
    url, _ = post()
    analysis = submit(stack, url)
    done = wait_for(stack, analysis["id"])
    assert done["status"] == "completed"
    row = records.read(make_engine(stack.env["DATABASE_URL"]), analysis["id"])
    assert row is not None
    job_ids = [s["job_id"] for s in row.stages]
    connection = redis_client(stack.settings)
    try:
        wait_until(lambda: not any(connection.exists(f"rq:job:{job_id}") for job_id in job_ids), 10, "results to expire")
        assert read(stack, analysis["id"]) == done
        connection.flushdb()
        assert read(stack, analysis["id"]) == done
        assert [a["id"] for a in stack.client.get("/analyses", query_string={"url": url}).get_json()["analyses"]] == [
            analysis["id"]]
    finally:
        connection.close()
