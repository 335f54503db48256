"""`trustcard analyse URL --wait`: the installed command against a served app, stages run here."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from werkzeug.serving import make_server

from tests.support.migrations import upgrade
from tests.unit.test_analyses import work
from trustcard.api.app import create_app
from trustcard.config import load_settings
from workers import storage

TRUSTCARD = Path(sys.executable).parent / "trustcard"


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, fakeredis.FakeRedis]]:
    database = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(database)
    monkeypatch.setenv("DATABASE_URL", database)
    monkeypatch.setattr(storage, "_engine", None)
    redis = fakeredis.FakeRedis()
    app = create_app(load_settings({"DATABASE_URL": database, "SECRET_KEY": "unit"}), redis=redis)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", redis
    server.shutdown()
    thread.join(5)
    app.extensions["trustcard.engine"].dispose()
    storage.engine().dispose()
    monkeypatch.setattr(storage, "_engine", None)


def test_analyse_wait_follows_the_stages_and_prints_the_result(served: tuple[str, fakeredis.FakeRedis]) -> None:
    url, redis = served
    command = subprocess.Popen(
        [str(TRUSTCARD), "--url", url, "analyse", "https://instagram.com/p/CLI1/", "--wait"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while command.poll() is None and time.monotonic() < deadline:
        work(redis)  # the stages run in this process, as a worker would run them
        time.sleep(0.05)
    out, err = command.communicate(timeout=10)
    assert command.returncode == 0, err
    assert json.loads(out)["trust_score"] is None and set(json.loads(out)["stages"]) >= {"content", "trust"}
    assert err.splitlines()[0].startswith("analysis ") and err.splitlines()[0].endswith("of https://www.instagram.com/p/CLI1/")
    assert "completed" in err.splitlines()[-1]


def test_analyse_refuses_a_url_that_is_not_a_post_with_exit_3(served: tuple[str, fakeredis.FakeRedis]) -> None:
    url, _ = served
    done = subprocess.run([str(TRUSTCARD), "--url", url, "analyse", "https://example.com/p/X/"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 3
    assert "url is on 'example.com', not Instagram" in done.stderr and "validation_error, HTTP 422" in done.stderr
