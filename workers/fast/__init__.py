"""A worker as fast as Celery's prefork pool, started as `rq worker`.

`FastWorker` (in `workers.fast.worker`) supervises one long-lived job process
(`workers.fast.horse`) that runs many jobs with lean Redis bookkeeping
(`workers.fast.bookkeeping`); the two share the running job through a `JobSlot`
(`workers.fast.slot`). Use it as `rq worker --worker-class workers.fast.FastWorker ...`.
"""

from __future__ import annotations

from workers.fast.worker import FastWorker

__all__ = ["FastWorker"]
