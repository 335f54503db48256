"""The RQ contract harness's own parts: what it reads, and the two rules it relaxes."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType

import fakeredis
import pytest
from rq.job import Job
from rq.serializers import DefaultSerializer, JSONSerializer

from tests.rq_contract import suite
from tests.rq_contract.suite import EXPECTED_FAILURES, PLUGIN_DIR, pinned_rq_version, procfile_worker_class
from workers.job import CatalogueJob


def _setup_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rq_contract_setup", PLUGIN_DIR / "rq_contract_setup.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _import(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_it_reads_the_pinned_rq_and_the_procfiles_worker_class() -> None:
    import rq

    assert pinned_rq_version() == rq.__version__
    worker_class = _import(procfile_worker_class())
    assert issubclass(worker_class, rq.worker.Worker)


def test_the_worker_forces_json_and_the_catalogue_and_the_relaxed_one_does_not() -> None:
    worker_class = _import(procfile_worker_class())
    connection = fakeredis.FakeRedis()
    strict = worker_class(["default"], connection=connection)
    assert strict.serializer is JSONSerializer and strict.job_class is CatalogueJob

    relaxed_class = _setup_module().relaxed(worker_class)
    relaxed = relaxed_class(["default"], connection=connection)
    assert relaxed.serializer is DefaultSerializer and relaxed.job_class is Job
    assert isinstance(relaxed, worker_class)

    class CustomJob(Job):
        pass

    assert relaxed_class(["default"], connection=connection, job_class=CustomJob).job_class is CustomJob
    assert type("Sub", (relaxed_class,), {"job_class": CustomJob})(["default"], connection=connection).job_class is CustomJob


def test_every_expected_failure_says_its_kind_and_reason() -> None:
    entries = tomllib.loads(EXPECTED_FAILURES.read_text())
    assert entries
    for node_id, entry in entries.items():
        assert node_id.startswith("tests/test_") and "::" in node_id, node_id
        assert entry["kind"] in ("intended", "to-be-fixed"), node_id
        assert len(entry["reason"]) > 20, node_id


def _fake_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, answers: list[dict[str, str]]) -> list[list[str]]:
    """`suite._run` answering `answers` in turn (exit status 1 when one failed, as pytest's);
    returns the tests each call was asked to run."""
    asked: list[list[str]] = []

    def fake_run(suite_dir: Path, env: dict[str, str], tests: list[str], report: Path) -> suite.Outcome:
        asked.append(tests)
        answer = dict(answers[len(asked) - 1])
        return suite.Outcome(int("failed" in answer.values()), answer, "")

    monkeypatch.setattr(suite, "_run", fake_run)
    monkeypatch.setattr(suite, "rq_suite", lambda version: tmp_path)
    return asked


def test_a_test_timed_by_sleeps_that_fails_runs_again_and_its_pass_counts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    timed, other = suite.TIMED_BY_SLEEPS[0], "tests/test_worker.py::TestWorker::test_other"
    asked = _fake_runs(monkeypatch, tmp_path, [{timed: "failed", other: "failed"}, {timed: "passed"}])
    outcome = suite.run_suite("x.Worker", 1, expected=True, report=tmp_path / "report.json")
    assert asked == [["tests"], [timed]]  # only the timed test is run again, never another failure
    assert outcome.outcomes == {timed: "passed", other: "failed"}
    assert outcome.reruns == {timed: ["passed"]}
    assert outcome.returncode == 1  # the other failure still fails the suite


def test_a_suite_whose_only_failure_passed_when_run_again_passes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Found by CI: the rerun's pass was counted, but pytest's exit status of the first run
    (1) still failed the contract test."""
    timed, other = suite.TIMED_BY_SLEEPS[0], "tests/test_worker.py::TestWorker::test_other"
    _fake_runs(monkeypatch, tmp_path, [{timed: "failed", other: "passed"}, {timed: "failed"}, {timed: "passed"}])
    outcome = suite.run_suite("x.Worker", 1, expected=True, report=tmp_path / "report.json")
    assert outcome.reruns == {timed: ["failed", "passed"]}
    assert outcome.with_outcome("failed") == [] and outcome.returncode == 0


def test_a_test_timed_by_sleeps_that_keeps_failing_stays_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    timed = suite.TIMED_BY_SLEEPS[1]
    asked = _fake_runs(monkeypatch, tmp_path, [{timed: "failed"}] + [{timed: "failed"}] * suite.TIMED_RERUNS)
    outcome = suite.run_suite("x.Worker", 1, expected=True, report=tmp_path / "report.json")
    assert len(asked) == 1 + suite.TIMED_RERUNS
    assert outcome.with_outcome("failed") == [timed] and outcome.returncode == 1
