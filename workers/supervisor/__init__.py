"""The worker: `rq worker --worker-class workers.supervisor.JobProcessSupervisor ...`.

One process per role:

- `supervisor`: `JobProcessSupervisor`, the worker RQ knows (registers, heartbeats,
  supervises its job process, enforces the hard limit and the shutdown grace);
- `job_process`: the long-lived job process, which takes, runs and ends job after job;
- `bookkeeping`: RQ's per-job Redis writes in one round trip;
- `slot`: the shared page through which the supervisor sees the running job;
- `deaths`: what is recorded when a job process dies; `commands`: RQ's pubsub commands;
- `abandoned`: the tasks of vanished workers, settled about a minute after they went;
- `recording`: RQ's own end-of-job methods, counted once for /metrics;
- `scheduler`: RQ's scheduler, run in the supervisor's loop; `process`: process plumbing and the job code to import.
"""

from __future__ import annotations

from workers.supervisor.supervisor import JobProcessSupervisor

__all__ = ["JobProcessSupervisor"]
