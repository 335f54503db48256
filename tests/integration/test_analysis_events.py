"""`GET /analyses/<id>/events` through the Procfile's web line (gunicorn, gevent) with a real
`rq worker` from the Procfile: an update per stage transition, then the end; a client that
reconnects with `Last-Event-ID` mid-pipeline misses nothing. SQLite is enough here: the
stream reads the row the same way on either database (tests/integration/test_analyses.py
runs the stages on both).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import datetime
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import stage_probes
from tests.integration.test_analyses import PROBE_SITE, post, probe_file
from tests.integration.test_task_events import read_events
from tests.support.migrations import upgrade
from tests.support.paths import BIN, ROOT
from tests.support.stack import Stack, WebProcess

pytestmark = pytest.mark.integration

STAGES = ("content", "ai_detection", "deepfake_detection", "fact_check", "probe", "trust")
EVERY_TRANSITION = [(name, status) for name in STAGES for status in ("running", "completed")]


@pytest.fixture
def stack_and_web(
    make_stack: Callable[..., Stack], start_web: Callable[[dict[str, str]], WebProcess], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[Stack, WebProcess]]:
    database = f"sqlite:///{tmp_path / 'analyses.db'}"
    upgrade(database)
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    monkeypatch.setenv("TRUSTCARD_PROBE_DIR", str(probe_dir))
    stage_probes.register_probe(on_models=True)
    try:
        stack = make_stack(DATABASE_URL=database, TRUSTCARD_PROBE_DIR=str(probe_dir),
                           TRUSTCARD_PROBE_STAGE="models", PYTHONPATH=f"{PROBE_SITE}{os.pathsep}{ROOT}")
        stack.start_worker()
        yield stack, start_web(stack.env)
    finally:
        stage_probes.unregister_probe()


def submit(web: WebProcess, url: str) -> str:
    response = requests.post(f"{web.url}/analyses", json={"url": url}, timeout=10)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def transitions(blocks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(b["data"]["transition"]["stage"], b["data"]["transition"]["status"])
            for b in blocks if b.get("event") == "update"]


def test_a_stream_shows_an_update_per_stage_transition_and_the_end(stack_and_web: tuple[Stack, WebProcess]) -> None:
    _, web = stack_and_web
    url, shortcode = post()
    probe_file("sleep", shortcode, "0.5")
    analysis_id = submit(web, url)
    with requests.get(f"{web.url}/analyses/{analysis_id}/events", stream=True, timeout=60) as response:
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
        blocks = [b for b in read_events(response) if "event" in b]
    assert blocks[0]["event"] == "state" and blocks[-1]["event"] == "end"
    assert blocks[-1]["data"]["status"] == "completed" and int(blocks[-1]["id"]) == 2 * len(EVERY_TRANSITION) + 1
    ids = [int(b["id"]) for b in blocks]
    assert ids == sorted(set(ids)), ids
    # what happened before the stream's first read is in `state`; everything after is an update each
    assert transitions(blocks) == EVERY_TRANSITION[int(blocks[0]["id"]) // 2:]


def test_a_reconnect_with_last_event_id_mid_pipeline_misses_nothing(stack_and_web: tuple[Stack, WebProcess]) -> None:
    _, web = stack_and_web
    url, shortcode = post()
    probe_file("sleep", shortcode, "1")
    analysis_id = submit(web, url)
    before: list[dict[str, Any]] = []
    with requests.get(f"{web.url}/analyses/{analysis_id}/events", stream=True, timeout=60) as response:
        for block in read_events(response):
            if "event" in block:
                before.append(block)
            if transitions(before)[-1:] == [("probe", "running")]:
                break  # the client drops the connection while the probe runs
    last_id = before[-1]["id"]
    with requests.get(f"{web.url}/analyses/{analysis_id}/events", headers={"Last-Event-ID": last_id},
                      stream=True, timeout=60) as response:
        assert response.status_code == 200
        after = [b for b in read_events(response) if "event" in b]
    assert after[-1]["event"] == "end" and after[-1]["data"]["status"] == "completed"
    assert transitions(after) == [("probe", "completed"), ("trust", "running"), ("trust", "completed")]
    first = int(before[0]["id"]) // 2
    assert transitions(before) + transitions(after) == EVERY_TRANSITION[first:]
    done = requests.get(f"{web.url}/analyses/{analysis_id}/events", headers={"Last-Event-ID": after[-1]["id"]},
                        timeout=10)
    assert done.status_code == 204


def test_wait_answers_within_a_second_of_the_end_woken_by_the_announcement(
    stack_and_web: tuple[Stack, WebProcess],
) -> None:
    _, web = stack_and_web
    url, shortcode = post()
    probe_file("sleep", shortcode, "1")
    analysis_id = submit(web, url)
    response = requests.get(f"{web.url}/analyses/{analysis_id}", params={"wait": 20}, timeout=30)
    answered = time.time()
    assert response.status_code == 200 and response.json()["status"] == "completed", response.text
    ended = datetime.fromisoformat(response.json()["ended_at"].replace("Z", "+00:00")).timestamp()
    assert answered - ended < 1.0  # the quiet reader's safety read comes only every 3 s


def test_the_cli_follows_an_analysis_on_its_stream_and_shows_each_stage(
    stack_and_web: tuple[Stack, WebProcess],
) -> None:
    _, web = stack_and_web
    url, shortcode = post()
    probe_file("sleep", shortcode, "0.5")
    env = {key: value for key, value in os.environ.items() if key not in ("TRUSTCARD_URL", "API_KEY")}
    done = subprocess.run([str(BIN / "trustcard"), "--url", web.url, "analyse", url, "--wait"],
                          capture_output=True, text=True, timeout=90, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["trust_score"] is None
    shown = [line for line in done.stderr.splitlines() if line.startswith("[")]
    every = [f"[{100 * index // len(STAGES):3d}%] {name}" for index, name in enumerate(STAGES)] + ["[100%] completed"]
    # the stages before the stream's first read are in its `state` (the first line); each after it is a line
    assert len(shown) >= 3 and shown == every[-len(shown):], done.stderr
    # followed on the stream, not by polling: one stream opened, no read of the analysis
    access = [line for line in web.log().splitlines() if '"GET /analyses/' in line]
    assert sum("/events HTTP" in line for line in access) == 1 and all("/events" in line for line in access), access
