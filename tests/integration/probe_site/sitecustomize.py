"""Loaded at start-up by worker processes that tests start with this directory on PYTHONPATH:
registers the tests' probe stage in the worker, as a deployment would register a model."""

import os

if os.environ.get("TRUSTCARD_PROBE_STAGE"):
    from tests.stage_probes import register_probe

    register_probe(on_models=os.environ["TRUSTCARD_PROBE_STAGE"] == "models")
