"""Headless Chromium for the browser tests: page text, and screenshots checked for content.

Chromium is Debian's `chromium` package (`.ci/run` installs it when missing). Pages
behind Basic auth are opened with the login in the URL (`http://user:pass@host/...`),
which headless Chromium sends for the page and for the requests its scripts make.
Screenshots are decoded with the standard library (zlib and the PNG row filters), so
the tests can count the colours a page really shows.
"""

from __future__ import annotations

import html
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.paths import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--window-size=1280,800", "--virtual-time-budget=8000",
]
CHROMIUM_TIMEOUT_SECONDS = 120
MIN_COLOURS = 20
"""A blank page shows one or two colours; a page of text and controls shows hundreds."""
SCREENSHOTS_DIR = ROOT / "docs"
UPDATE_SCREENSHOTS = "UPDATE_SCREENSHOTS"
"""Set to 1 to write the screenshots to docs/ for the README (otherwise they stay in tmp)."""

Pixel = tuple[int, int, int]


def chromium(url: str, *action: str) -> str:
    """Run headless Chromium on `url` with `action` (--dump-dom or --screenshot=...); its stdout."""
    assert CHROMIUM, "Chromium is needed for the browser tests (.ci/run installs Debian's chromium)"
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *action, url],
            capture_output=True,
            timeout=CHROMIUM_TIMEOUT_SECONDS,
        )
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    return result.stdout.decode(errors="replace")


@dataclass(frozen=True)
class Image:
    """A decoded 8-bit RGB or RGBA PNG: one `bytes` of pixel data per row."""

    width: int
    height: int
    channels: int
    rows: list[bytes]

    def pixels(self) -> Iterator[Pixel]:
        """Every pixel's RGB, alpha dropped."""
        step = self.channels
        for row in self.rows:
            for x in range(0, len(row), step):
                yield row[x], row[x + 1], row[x + 2]


def decode_png(png: Path) -> Image:
    """Decode what Chromium writes (8-bit RGB/RGBA, not interlaced), undoing each row's filter."""
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG"
    position, compressed, header = 8, bytearray(), b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        chunk = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            compressed += chunk
        position += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and interlace == 0 and colour_type in (2, 6), f"unexpected PNG format in {png}"
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(bytes(compressed))
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        row = _unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), previous, channels)
        rows.append(bytes(row))
        previous = row
    return Image(width, height, channels, rows)


def _unfilter(kind: int, row: bytearray, above: bytearray, bpp: int) -> bytearray:
    """Undo one PNG row filter (None, Sub, Up, Average, Paeth)."""
    if kind == 1:
        for x in range(bpp, len(row)):
            row[x] = (row[x] + row[x - bpp]) & 0xFF
    elif kind == 2:
        row = bytearray((value + up) & 0xFF for value, up in zip(row, above))
    elif kind == 3:
        for x in range(len(row)):
            left = row[x - bpp] if x >= bpp else 0
            row[x] = (row[x] + ((left + above[x]) >> 1)) & 0xFF
    elif kind == 4:
        for x in range(len(row)):
            a = row[x - bpp] if x >= bpp else 0
            b = above[x]
            c = above[x - bpp] if x >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            row[x] = (row[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
    else:
        assert kind == 0, f"unknown PNG filter {kind}"
    return row


def distinct_colours(png: Path) -> int:
    """How many different RGB colours the screenshot shows (a blank page shows one or two)."""
    return len(set(decode_png(png).pixels()))


def screenshot(url: str, name: str, tmp_path: Path) -> Path:
    """Screenshot `url` to tmp_path/name, check it is not blank, and copy it to docs/ when asked."""
    target = tmp_path / name
    chromium(url, f"--screenshot={target}")
    assert target.exists(), f"Chromium wrote no screenshot of {url}"
    assert distinct_colours(target) > MIN_COLOURS, f"{name} looks blank"
    if os.environ.get(UPDATE_SCREENSHOTS) == "1":
        shutil.copy(target, SCREENSHOTS_DIR / name)
    return target


def terminal_screenshot(command: str, output: str, name: str, tmp_path: Path) -> Path:
    """A terminal-like picture of a command and its output, for the README."""
    page = tmp_path / f"{name}.html"
    page.write_text(
        "<html><body style='margin:0;background:#1e1e1e'><pre style='color:#e6e6e6;font:15px monospace;"
        f"padding:24px;white-space:pre-wrap'>$ {html.escape(command)}\n{html.escape(output)}</pre></body></html>"
    )
    return screenshot(page.as_uri(), name, tmp_path)
