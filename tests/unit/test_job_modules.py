"""Which job code the supervisor imports before it forks (`workers.supervisor.process.JobModules`)."""

from __future__ import annotations

import os
import sys

import pytest
from rq import Queue

from workers.supervisor import JobProcessSupervisor
from workers.supervisor.job_process import JobProcess
from workers.supervisor.process import ExitCode, JobModules
from workers.supervisor.slot import JobSlot

ALL_QUEUES = ("webhooks", "analysis", "models", "ingest")


def test_nothing_is_imported_until_a_job_process_used_it(monkeypatch: pytest.MonkeyPatch) -> None:
    imported: list[str] = []
    monkeypatch.setattr("importlib.import_module", imported.append)
    modules = JobModules(ALL_QUEUES)
    modules.preload(0, "w")
    assert imported == []
    used = modules.bit_of("workers.analysis.process_post") | modules.bit_of("workers.diagnostics.add")
    modules.preload(used, "w")
    modules.preload(used, "w")  # once only
    assert sorted(imported) == ["workers.analysis", "workers.diagnostics"]


def test_a_module_outside_the_catalogue_or_the_queues_has_no_bit() -> None:
    assert JobModules(ALL_QUEUES).bit_of("tests.unit.helpers.anything") == 0
    assert JobModules(("webhooks",)).bit_of("workers.analysis.process_post") == 0
    assert JobModules(ALL_QUEUES).bit_of("workers.analysis.process_post") != 0


def test_a_job_process_marks_the_module_of_the_job_it_ran(worker: JobProcessSupervisor, queue: Queue) -> None:
    queue.enqueue_call("workers.diagnostics.add", kwargs={"x": 1, "y": 2})
    modules = JobModules(ALL_QUEUES)
    slot = JobSlot()
    loop = JobProcess(worker, slot, parent_pid=os.getppid(), max_jobs=10, max_memory_mb=0, burst=True,
                      max_idle_time=None, job_modules=modules)
    assert loop.loop() == ExitCode.EMPTY
    assert slot.used() == modules.bit_of("workers.diagnostics.add")
    slot.end()  # the slot's other fields are rewritten; the marks stay
    assert slot.used() == modules.bit_of("workers.diagnostics.add")


def test_the_supervisor_imports_what_its_job_process_marked(worker: JobProcessSupervisor,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "workers.analysis_webhooks", raising=False)
    worker._job_modules = JobModules(ALL_QUEUES)
    slot = JobSlot()
    slot.mark_used(worker._job_modules.bit_of("workers.analysis_webhooks.deliver"))
    worker._job_modules.preload(slot.used(), worker.name)
    assert "workers.analysis_webhooks" in sys.modules
