"""RQ's own test suite, for the pinned RQ, run against the Procfile's worker.

`suite.py` fetches the suite (RQ's sdist ships it) and runs it; `plugin/` is what that run
loads into each of its processes; `expected_failures.toml` lists the tests that fail on
our worker, each with its reason. `tests/integration/test_rq_contract.py` is the test.
"""
