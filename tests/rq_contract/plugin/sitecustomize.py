"""Loaded by every Python process of an RQ contract run (this directory is on PYTHONPATH).

RQ's test suite starts workers in subprocesses (`rqworker`, `rq worker`) as well as in its
own process, so the redirections must happen at interpreter start, not in a pytest hook.
"""

from __future__ import annotations

import os

if os.environ.get("RQ_CONTRACT_REDIS_PORT"):
    import rq_contract_setup

    rq_contract_setup.install()
