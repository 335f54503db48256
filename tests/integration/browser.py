"""Headless Chromium for the browser tests: page text, and screenshots checked for content."""

from __future__ import annotations

import html
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

from tests.integration.conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
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




def terminal_screenshot(command: str, output: str, name: str, tmp_path: Path) -> Path:
    """A terminal-like picture of a command and its output, for the README."""
    page = tmp_path / f"{name}.html"
    page.write_text(
        "<html><body style='margin:0;background:#1e1e1e'><pre style='color:#e6e6e6;font:15px monospace;"
        f"padding:24px;white-space:pre-wrap'>$ {html.escape(command)}\n{html.escape(output)}</pre></body></html>"
    )
    return screenshot(page.as_uri(), name, tmp_path)
