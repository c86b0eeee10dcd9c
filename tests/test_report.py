"""``batchrun report``: totals streamed from outputs and journals, percentiles, the HTML page."""

from __future__ import annotations

import json
import random
import re
import shutil
import struct
import subprocess
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batchrun.cli import cli
from batchrun.render.report import format_report
from batchrun.render.report_html import nice_ticks, render_html
from batchrun.reporting.report import LogHistogram, report
from batchrun.store.columns import blank_row
from batchrun.store.sink import journal_path, output_schema

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def row(i: int, **fields: Any) -> dict[str, Any]:
    r = blank_row(f"r{i}")
    r.update(
        status="ok",
        model="claude-haiku-4-5-20251001",
        stop_reason="end_turn",
        input_tokens=100,
        output_tokens=10,
        cache_creation_input_tokens=0,
        cache_read_input_tokens=0,
        cost_usd=0.00015,
        attempts=1,
        latency_ms=100.0 + i,
        elapsed_ms=100.0 + i,
        finished_at=T0 + timedelta(seconds=i),
    )
    r.update(fields)
    return r


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=output_schema()), path)
    return path


def write_journal(output: Path, records: list[tuple[int, dict[str, Any]]]) -> None:
    with journal_path(output).open("w", encoding="utf-8") as fh:
        for index, r in records:
            record = {"_index": index, **r}
            record["finished_at"] = r["finished_at"].isoformat().replace("+00:00", "Z")
            fh.write(json.dumps(record) + "\n")


def sample_rows() -> list[dict[str, Any]]:
    rows = [row(i) for i in range(8)]
    rows.append(
        row(
            8,
            model="claude-sonnet-4-5-20250929",
            input_tokens=1000,
            output_tokens=200,
            cache_creation_input_tokens=500,
            cache_read_input_tokens=2000,
            cost_usd=0.01,
            stop_reason="max_tokens",
            attempts=3,
        )
    )
    rows.append(
        row(
            9,
            status="error",
            model="claude-haiku-4-5",
            stop_reason=None,
            input_tokens=None,
            output_tokens=None,
            cost_usd=None,
            error_type="overloaded_error",
            error_message="Overloaded <script>alert(1)</script>",
            latency_ms=None,
            attempts=9,
        )
    )
    return rows


def test_a_final_output_is_totalled(tmp_path: Path) -> None:
    out = write_parquet(tmp_path / "out.parquet", sample_rows())
    rep = report([out])
    assert (rep.rows, rep.ok, rep.error) == (10, 9, 1)
    assert rep.stop_reasons == {"end_turn": 8, "max_tokens": 1}
    assert rep.errors["overloaded_error"].count == 1
    assert rep.errors["overloaded_error"].example.startswith("Overloaded")
    assert (rep.input_tokens, rep.output_tokens) == (1800, 280)
    assert (rep.cache_creation_input_tokens, rep.cache_read_input_tokens) == (500, 2000)
    assert rep.cost_usd == pytest.approx(8 * 0.00015 + 0.01)
    assert rep.models["claude-sonnet-4-5-20250929"].cost_usd == pytest.approx(0.01)
    assert rep.models["claude-haiku-4-5-20251001"].ok == 8
    assert rep.attempts == {1: 8, 3: 1, 9: 1}
    assert rep.span_s == 9.0 and rep.rows_per_minute == pytest.approx(10 / (9 / 60))
    text = format_report(rep)
    for part in ("ok 9, error 1", "overloaded_error", "p50", "p99", "throughput", "$0.0112"):
        assert part in text


def test_a_journal_replaces_older_final_rows_and_a_journal_alone_is_read(tmp_path: Path) -> None:
    rows = sample_rows()
    out = write_parquet(tmp_path / "out.parquet", rows)
    retried = row(9, cost_usd=0.0002)  # row 9 answered by a --retry-errors run
    write_journal(out, [(9, rows[9]), (9, retried), (10, row(10))])
    rep = report([out])
    assert (rep.rows, rep.ok, rep.error) == (11, 11, 0)
    assert rep.sources[0].final and rep.sources[0].journal

    only = tmp_path / "pending.parquet"
    write_journal(only, [(0, row(0)), (1, row(1)), (0, row(0, output_tokens=99))])
    rep = report([only])
    assert rep.rows == 2 and rep.output_tokens == 99 + 10
    assert not rep.sources[0].final and "journal only" in format_report(rep)
    assert report([journal_path(only)]).rows == 2


def test_a_damaged_journal_line_is_skipped(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    write_journal(out, [(0, row(0)), (1, row(1))])
    with journal_path(out).open("a", encoding="utf-8") as fh:
        fh.write('{"_index": 2, "status": "ok", "inpu\n')
    assert report([out]).rows == 2


def test_jsonl_outputs_and_several_outputs_add_up(tmp_path: Path) -> None:
    a = write_parquet(tmp_path / "a.parquet", sample_rows())
    b = tmp_path / "b.jsonl"
    with b.open("w", encoding="utf-8") as fh:
        for r in sample_rows()[:4]:
            fh.write(json.dumps({**r, "finished_at": r["finished_at"].isoformat()}) + "\n")
    rep = report([a, b])
    assert rep.rows == 14 and len(rep.sources) == 2


def test_a_missing_output_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "nope.parquet")])
    assert result.exit_code == 1 and "no such output" in result.stderr


def test_answers_without_a_price_are_priced_at_report_time_when_possible(tmp_path: Path) -> None:
    out = write_parquet(
        tmp_path / "o.parquet",
        [row(0, cost_usd=None), row(1, cost_usd=None, model="claude-unpriced-2")],
    )
    rep = report([out])
    assert rep.priced_now == 1 and rep.unpriced == 1
    assert rep.cost_usd == pytest.approx((100 * 1 + 10 * 5) / 1e6)
    assert "no price (claude-unpriced-2)" in format_report(rep)


def test_many_rows_stream_in_batches(tmp_path: Path) -> None:
    n = 70_000  # more than one record batch
    rng = random.Random(1)
    latencies = [rng.lognormvariate(6, 0.6) for _ in range(n)]
    table = pa.table(
        {
            "id": [f"r{i}" for i in range(n)],
            "status": ["ok"] * n,
            "model": ["claude-haiku-4-5"] * n,
            "output_tokens": pa.array([5] * n, pa.int64()),
            "cost_usd": [1e-5] * n,
            "latency_ms": latencies,
            "finished_at": pa.array(
                [T0 + timedelta(milliseconds=10 * i) for i in range(n)], pa.timestamp("ms", "UTC")
            ),
        }
    )
    out = tmp_path / "big.parquet"
    pq.write_table(table, out)  # an older output: most columns missing
    rep = report([out])
    assert rep.rows == n and rep.output_tokens == 5 * n
    assert rep.cost_usd == pytest.approx(n * 1e-5)
    exact = sorted(latencies)
    for q in (0.5, 0.9, 0.99):
        got = rep.latency.quantile(q)
        assert got is not None
        assert got == pytest.approx(exact[int(q * n) - 1], rel=0.012)


def test_log_histogram_percentiles_are_within_one_percent() -> None:
    rng = random.Random(5)
    values = [rng.uniform(1, 5000) for _ in range(5000)]
    hist = LogHistogram()
    hist.add(pa.array(values[:2000]))
    hist.add(pa.array([*values[2000:], None]))
    ordered = sorted(values)
    for q in (0.1, 0.5, 0.9, 0.99):
        assert hist.quantile(q) == pytest.approx(ordered[int(q * 5000) - 1], rel=0.011)
    assert hist.n == 5000 and sum(count for _, _, count in hist.bins(30)) == 5000
    assert LogHistogram().quantile(0.5) is None


def test_nice_ticks() -> None:
    assert nice_ticks(7) == [0, 2, 4, 6, 8]
    assert nice_ticks(0.013) == pytest.approx([0, 0.005, 0.01, 0.015])
    assert nice_ticks(0) == [0.0, 1.0]


# --- HTML ----------------------------------------------------------------------------------


def test_the_html_page_is_self_contained_and_escaped(tmp_path: Path) -> None:
    out = write_parquet(tmp_path / "out.parquet", sample_rows())
    page = render_html(report([out]))
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 4
    assert "<script>" not in page and "&lt;script&gt;" in page
    # No external requests: the only URL is the SVG namespace, which is never fetched.
    urls = set(re.findall(r"https?://[^'\" )]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}
    for title in ("Latency per request", "Answers per minute", "Tokens by model", "Cost by model"):
        assert title in page


def test_an_empty_output_still_renders(tmp_path: Path) -> None:
    out = write_parquet(tmp_path / "out.parquet", [])
    page = render_html(report([out]))
    assert "no latencies recorded" in page and "no rows" in page


def test_cli_report_json_and_html(tmp_path: Path) -> None:
    out = write_parquet(tmp_path / "out.parquet", sample_rows())
    html = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", str(out), "--json", "--html", str(html)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rows"] == 10 and data["errors"]["overloaded_error"]["count"] == 1
    assert data["latency_ms"]["p50"] is not None
    assert html.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
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
