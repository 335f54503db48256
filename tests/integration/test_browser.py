"""A real browser (headless Chromium) logs into /rq and opens /docs on the running stack.

The screenshots it takes are checked for content; with UPDATE_SCREENSHOTS=1 they are
also written to docs/ for the README.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, Stack, WebProcess

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LOGIN = ("admin", "browser-pass")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--window-size=1280,800", "--virtual-time-budget=8000",
]


def chromium(url: str, *action: str) -> str:
    """Run headless Chromium on `url` with `action` (--dump-dom or --screenshot=...)."""
    assert CHROMIUM, "Chromium is needed for the browser tests (.ci/run installs Debian's chromium)"
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *action, url],
            capture_output=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout.decode(errors="replace")


def distinct_colours(png: Path) -> int:
    """How many different RGB(A) byte triples the PNG's pixels use (a blank page uses one or two)."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat, header = 8, b"", b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        chunk = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        position += 12 + length
    width, _, _, colour_type = struct.unpack(">IIBB", header[:10])
    channels = {2: 3, 6: 4}[colour_type]
    raw = zlib.decompress(idat)
    stride = width * channels + 1
    # Filter bytes make rows hard to read exactly; sampling raw pixel bytes still separates a
    # page with text and colours from an empty one.
    samples = {raw[i : i + 3] for row in range(0, len(raw), stride * 7) for i in range(row + 1, row + stride - 3, 3 * 11)}
    return len(samples)


def screenshot(url: str, name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    chromium(url, f"--screenshot={target}")
    assert distinct_colours(target) > 20, f"{name} looks blank"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        shutil.copy(target, ROOT / "docs" / name)
    return target


@pytest.fixture
def served(make_stack: Callable[..., Stack], start_web: Callable[..., WebProcess]) -> tuple[Stack, WebProcess]:
    stack = make_stack(DASHBOARD_PASSWORD=LOGIN[1])
    stack.start_worker()
    return stack, start_web(stack.env)


def test_dashboard_shows_the_queue_and_a_finished_job(served: tuple[Stack, WebProcess], tmp_path: Path) -> None:
    stack, web = served
    task_id = stack.submit("/tasks/test/add?x=7&y=8")
    assert stack.wait_for(task_id)["status"] == "completed"
    base = f"http://{LOGIN[0]}:{LOGIN[1]}@127.0.0.1:{web.port}/rq/0/view"

    queues = chromium(f"http://{LOGIN[0]}:{LOGIN[1]}@127.0.0.1:{web.port}/rq/", "--dump-dom")
    assert "analysis" in queues
    finished = chromium(f"{base}/jobs/analysis/finished/8/asc/1", "--dump-dom")
    assert task_id in finished and "workers.test_jobs.add(x=7, y=8)" in finished
    screenshot(f"{base}/jobs/analysis/finished/8/asc/1", "dashboard.png", tmp_path)

    refused = chromium(f"http://127.0.0.1:{web.port}/rq/", "--dump-dom")
    assert "analysis" not in refused and "RQ-dashboard" not in refused  # no login, nothing shown


def test_docs_page_renders_the_api(served: tuple[Stack, WebProcess], tmp_path: Path) -> None:
    _, web = served
    page = chromium(f"http://127.0.0.1:{web.port}/docs", "--dump-dom")
    assert "/tasks/test/add" in page and "/health" in page
    screenshot(f"http://127.0.0.1:{web.port}/docs", "docs.png", tmp_path)
