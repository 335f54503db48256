"""Job code run directly (no worker), and the catalogue's promises about it."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.support.procfile import worker_class
from trustcard import params
from trustcard.catalogue import ALL_JOB_TYPES, BY_FUNCTION, BY_NAME, JOB_TYPES, QUEUE_NAMES, find_by_route
from workers import analysis, diagnostics
from workers.job import CatalogueJob, JobNotCatalogued
from workers.stages import STAGE_NAMES

ROOT = Path(__file__).resolve().parents[2]


def test_every_catalogued_function_exists() -> None:
    for job_type in ALL_JOB_TYPES:
        module_name, _, function_name = job_type.function.rpartition(".")
        assert callable(getattr(importlib.import_module(module_name), function_name)), job_type.name


def test_names_routes_and_functions_are_unique() -> None:
    assert len(BY_NAME) == len(BY_FUNCTION) == len(ALL_JOB_TYPES)
    for job_type in JOB_TYPES:
        assert find_by_route(job_type.route) is job_type
    assert find_by_route("test/long") is BY_NAME["test.long"]
    assert find_by_route("nothing/here") is None
    assert QUEUE_NAMES == ("webhooks", "analysis", "models", "ingest")


def test_internal_job_types_have_no_route_and_are_not_listed_for_clients() -> None:
    internal = [job_type for job_type in ALL_JOB_TYPES if job_type.internal]
    assert [job_type.name for job_type in internal] == ["webhooks.deliver", "analysis.stage", "analyses.deliver"]
    for job_type in internal:
        assert find_by_route(job_type.route) is None and job_type not in JOB_TYPES
        assert BY_FUNCTION[job_type.function] is job_type  # workers still run it


def test_add_and_sleep_answer_like_the_old_service() -> None:
    assert diagnostics.add(7, 8) == 15
    assert diagnostics.sleep(0) == "Slept for 0 seconds"


def test_tally_counts_each_run_under_its_task_and_answers_from_its_parameters_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fakeredis

    connection = fakeredis.FakeRedis()
    job = Job.create(diagnostics.tally, kwargs={"x": 21}, connection=connection, serializer=JSONSerializer)
    monkeypatch.setattr(diagnostics, "get_current_job", lambda: job)
    assert diagnostics.tally(21) == diagnostics.tally(21) == {"x": 21, "twice": 42}
    key = diagnostics.TALLY_KEY_PREFIX + job.id
    assert connection.get(key) == b"2"
    assert 0 < connection.ttl(key) <= diagnostics.TALLY_TTL_SECONDS
    monkeypatch.setattr(diagnostics, "get_current_job", lambda: None)
    assert diagnostics.tally(1) == {"x": 1, "twice": 2}  # run outside a worker: nothing to count under


def test_long_task_walks_the_five_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(diagnostics, "LONG_TASK_STAGE_SECONDS", 0)
    assert diagnostics.long_task() == {"status": "completed", "progress": list(STAGE_NAMES), "percent": 100}


def test_long_task_stages_are_the_contract() -> None:
    assert STAGE_NAMES == (
        "Extracting Instagram content...",
        "Running AI detection...",
        "Checking for deepfakes...",
        "Fact-checking claims...",
        "Calculating trust score...",
    )


def test_process_post_does_not_invent_a_trust_score() -> None:
    result = analysis.analyse("https://www.instagram.com/p/ABC/")
    assert result["trust_score"] is None and result["placeholder"] is True
    assert list(result["stages"]) == ["content", "ai_detection", "deepfake_detection", "fact_check", "trust"]
    assert all(stage["placeholder"] is True for stage in result["stages"].values())


def test_catalogue_job_refuses_other_functions(fake_redis: object) -> None:
    job = CatalogueJob.create("os.getcwd", connection=fake_redis, serializer=JSONSerializer)  # type: ignore[arg-type]
    with pytest.raises(JobNotCatalogued, match="os.getcwd"):
        job.perform()


def test_catalogue_job_runs_catalogued_functions(fake_redis: object) -> None:
    job = CatalogueJob.create(
        "workers.diagnostics.add", kwargs={"x": 2, "y": 3}, connection=fake_redis, serializer=JSONSerializer  # type: ignore[arg-type]
    )
    assert job.perform() == 5
    assert isinstance(job, Job)


def _modules_loaded_by(imports: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter holds after the Procfile's worker class and `imports`."""
    module, _, name = worker_class().rpartition(".")
    code = (
        f"import sys, importlib; getattr(importlib.import_module({module!r}), {name!r}); import {imports};"
        f"print(','.join(m for m in {modules!r} if m in sys.modules))"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert ran.returncode == 0, ran.stderr
    return [loaded for loaded in ran.stdout.strip().split(",") if loaded]


def test_worker_code_never_imports_flask() -> None:
    """What production runs: the worker class the Procfile names, and the job code."""
    assert _modules_loaded_by("workers.analysis, workers.diagnostics, trustcard.catalogue", ("flask",)) == []


def test_the_worker_process_never_imports_pydantic() -> None:
    """Parameters are validated by the web; the models (pydantic, about 10 MB a process) stay
    out of a worker until a job needs them (`JobType.params` is looked up on first use)."""
    imports = "rq.cli.cli, workers.settings, workers.diagnostics, trustcard.catalogue"
    assert _modules_loaded_by(imports, ("pydantic",)) == []


def test_a_job_types_params_model_is_its_named_model() -> None:
    assert BY_NAME["test.add"].params is params.AddParams
    assert all(issubclass(job_type.params, params.JobParams) for job_type in ALL_JOB_TYPES)
