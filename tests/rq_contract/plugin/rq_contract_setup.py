"""What an RQ contract run changes in each of its processes, and nothing more.

1. Redis: RQ's tests talk to `localhost:6379` (their default `Redis()` and URLs written
   into the tests). Connections to port 6379 go to the run's private Redis instead
   (`RQ_CONTRACT_REDIS_PORT`), so RQ's suite, which flushes databases, never touches a
   shared server.
2. The worker: `rq.Worker` (also as RQ's CLI and worker pool see it) becomes the worker
   class under test (`RQ_CONTRACT_WORKER_CLASS`, a dotted path; `rq.Worker` means stock
   RQ), with two of its rules relaxed, because RQ's tests need them off and they are
   policy, not the worker contract: the JSON-only serializer and the job class that runs
   only catalogued functions. The caller's `serializer` and `job_class` (RQ's defaults
   when none is given) reach RQ's `Worker.__init__`, whatever the class forced.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

STOCK = "rq.Worker"
SHARED_REDIS_PORT = 6379


def install() -> None:
    _redirect_redis(int(os.environ["RQ_CONTRACT_REDIS_PORT"]))
    path = os.environ.get("RQ_CONTRACT_WORKER_CLASS") or STOCK
    if path != STOCK:
        _point_rq_at(relaxed(_import(path)))


def _import(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _redirect_redis(port: int) -> None:
    import redis.connection

    original = redis.connection.Connection.__init__

    def __init__(self: Any, host: str = "localhost", port_: Any = SHARED_REDIS_PORT, *args: Any, **kwargs: Any) -> None:
        if "port" in kwargs:
            port_ = kwargs.pop("port")
        if int(port_) == SHARED_REDIS_PORT:
            port_ = port
        original(self, host, port_, *args, **kwargs)

    redis.connection.Connection.__init__ = __init__  # type: ignore[method-assign]


def relaxed(worker_class: type) -> type:
    """`worker_class` with the caller's serializer and job class restored.

    A shim class is put between the worker's own classes and the first RQ class of its
    MRO, so whatever the worker's `__init__` forced is replaced just before RQ reads it.
    """
    rq_base = next(c for c in worker_class.__mro__ if c.__module__.startswith("rq."))

    def shim_init(self: Any, *args: Any, **kwargs: Any) -> None:
        from rq.job import Job

        asked = self.__dict__.pop("_rq_contract_asked")
        kwargs["serializer"] = asked.get("serializer")
        kwargs["job_class"] = asked.get("job_class") or _declared_job_class(type(self), worker_class) or Job
        rq_base.__init__(self, *args, **kwargs)

    shim = type("RQContractShim", (rq_base,), {"__init__": shim_init})

    def outer_init(self: Any, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_rq_contract_asked"] = {k: kwargs.get(k) for k in ("serializer", "job_class")}
        worker_class.__init__(self, *args, **kwargs)

    return type(worker_class.__name__, (worker_class, shim), {"__init__": outer_init, "__module__": worker_class.__module__})


def _declared_job_class(cls: type, worker_class: type) -> type | None:
    """A `job_class` declared by a subclass (RQ's tests make some) or by RQ, not by our worker."""
    ours = [klass for klass in worker_class.__mro__ if not klass.__module__.startswith("rq.")]
    for klass in cls.__mro__:
        if "job_class" in klass.__dict__ and klass not in ours:
            return klass.__dict__["job_class"]
    return None


def _point_rq_at(worker_class: type) -> None:
    import rq
    import rq.worker
    import rq.worker_pool

    rq.Worker = worker_class  # type: ignore[misc]
    rq.worker.Worker = worker_class  # type: ignore[misc]
    rq.worker_pool.Worker = worker_class  # type: ignore[attr-defined]
