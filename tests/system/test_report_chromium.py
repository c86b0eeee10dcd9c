"""The report's HTML page rendered by a headless Chromium (a real process): skipped where no
``chromium`` is installed (the page itself: tests/unit/test_report.py)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from support.outputs import sample_rows, write_parquet

from batchrun.render.report_html import (
    render_html,
)
from batchrun.reporting.totals import report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs a headless Chromium to render the page (Debian: apt-get install chromium)",
)
def test_the_page_renders_in_headless_chromium(tmp_path: Path) -> None:
    out = write_parquet(tmp_path / "out.parquet", sample_rows())
    page = tmp_path / "report.html"
    page.write_text(render_html(report([out])), encoding="utf-8")
    png = tmp_path / "shot.png"
    assert CHROMIUM is not None
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={png}",
            "--window-size=1200,1600",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=90,
    )
    width, height, colours = _png_summary(png.read_bytes())
    assert (width, height) == (1200, 1600)
    # A blank or broken page is one or two colours; charts, text and cards give many.
    assert colours > 50


def _png_summary(data: bytes) -> tuple[int, int, int]:
    """Width, height and the number of distinct pixel values of an 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour_type = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour_type in (2, 6)
    channels = 3 if colour_type == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    colours: set[bytes] = set()
    # Every scanline must be unfiltered (each depends on the last); colours are sampled.
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        line = _unfilter(
            raw[start], bytearray(raw[start + 1 : start + 1 + stride]), previous, channels
        )
        if y % 8 == 0:
            colours.update(bytes(line[i : i + 3]) for i in range(0, stride, channels * 4))
        previous = line
    return width, height, len(colours)


def _unfilter(kind: int, line: bytearray, prev: bytearray, bpp: int) -> bytearray:
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = prev[i]
        corner = prev[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + left) & 255
        elif kind == 2:
            line[i] = (line[i] + up) & 255
        elif kind == 3:
            line[i] = (line[i] + (left + up) // 2) & 255
        elif kind == 4:
            p = left + up - corner
            pa_, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
            pred = left if pa_ <= pb and pa_ <= pc else up if pb <= pc else corner
            line[i] = (line[i] + pred) & 255
    return line
