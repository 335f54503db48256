"""Each private name of RQ the project uses still exists, with the shape we rely on.

An RQ upgrade that renames, moves or reshapes one fails here, not in a worker in
production. The list itself is `trustcard.rq_seams.SEAMS`.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from rq import Queue
from rq.executions import Execution
from rq.job import Job
from rq.scheduler import RQScheduler
from rq.worker import Worker

from trustcard import rq_seams
from trustcard.rq_seams import SEAMS, Seam


def _owner(path: str) -> Any:
    module_path, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_path), name)
    except (ImportError, AttributeError):
        return importlib.import_module(path)


def _fresh_instances(connection: fakeredis.FakeRedis) -> dict[str, Any]:
    queue = Queue("seams", connection=connection)
    job = queue.enqueue_call("workers.diagnostics.add", kwargs={"x": 1, "y": 2})
    return {
        "rq.worker.Worker": Worker([queue], connection=connection),
        "rq.job.Job": Job.fetch(job.id, connection=connection),
        "rq.executions.Execution": Execution("execution", job.id, connection=connection),
        "rq.scheduler.RQScheduler": RQScheduler([queue], connection=connection),
    }


@pytest.mark.parametrize("seam", SEAMS, ids=lambda seam: f"{seam.owner}.{seam.name}")
def test_each_seam_is_where_rq_keeps_it(seam: Seam, fake_redis: fakeredis.FakeRedis) -> None:
    if seam.kind == "attribute":
        instance = _fresh_instances(fake_redis)[seam.owner]
        assert hasattr(instance, seam.name), f"{seam.owner} no longer sets {seam.name}"
        return
    owner = _owner(seam.owner)
    found = getattr(owner, seam.name, None)
    assert callable(found), f"{seam.owner}.{seam.name} is gone"
    parameters = tuple(inspect.signature(found).parameters)
    assert parameters[: len(seam.parameters)] == seam.parameters, f"{seam.owner}.{seam.name}{parameters}"


def test_every_private_rq_name_in_the_seams_module_is_listed() -> None:
    """The accessors reach only names the list declares (so the test above covers them)."""
    source = inspect.getsource(rq_seams)
    used = set(re.findall(r"\.(_[a-z][a-z_]*)\b", source))
    assert used <= {seam.name for seam in SEAMS}


def test_the_worker_classes_reach_rq_only_through_the_seams() -> None:
    """No module of the worker touches an underscore name of an RQ object itself."""
    import workers.supervisor as package

    names = {seam.name for seam in SEAMS if seam.name.startswith("_")}
    for path in sorted(Path(package.__file__).parent.glob("*.py")):
        used = set(re.findall(r"\.(_[a-z][a-z_]*)\b", path.read_text()))
        # `_start_scheduler`: the supervisor overrides RQ's method by that name.
        assert not (used & names) - {"_start_scheduler"}, f"{path.name} uses {used & names} directly"
