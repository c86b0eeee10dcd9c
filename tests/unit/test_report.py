"""``batchrun report``: totals streamed from outputs and journals, percentiles, the HTML page."""

from __future__ import annotations

import itertools
import json
import random
import re
from datetime import timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.outputs import T0, row, sample_rows, write_parquet

from batchrun.formats.marks import Partial, partial_metadata
from batchrun.render.report_html import (
    LABEL_GAP,
    WIDTH,
    latency_chart,
    nice_ticks,
    place_labels,
    render_html,
    text_width,
    throughput_chart,
)
from batchrun.render.report_text import format_report
from batchrun.reporting.totals import LogHistogram, report
from batchrun.store.sink import journal_path, output_schema


def write_journal(output: Path, records: list[tuple[int, dict[str, Any]]]) -> None:
    with journal_path(output).open("w", encoding="utf-8") as fh:
        for index, r in records:
            record = {"_index": index, **r}
            record["finished_at"] = r["finished_at"].isoformat().replace("+00:00", "Z")
            fh.write(json.dumps(record) + "\n")


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
    # Grouped by the model the price table resolves: the error row asked for the alias, the
    # answers name the dated id they were served by; one model, both spellings kept.
    assert rep.models["claude-sonnet-4-5"].cost_usd == pytest.approx(0.01)
    haiku = rep.models["claude-haiku-4-5"]
    assert (haiku.rows, haiku.ok) == (9, 8)
    assert haiku.spellings == {"claude-haiku-4-5-20251001": 8, "claude-haiku-4-5": 1}
    assert set(rep.models) == {"claude-haiku-4-5", "claude-sonnet-4-5"}
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
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 5
    assert "<script>" not in page and "&lt;script&gt;" in page
    # No external requests: the only URL is the SVG namespace, which is never fetched.
    urls = set(re.findall(r"https?://[^'\" )]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}
    titles = (
        "Latency per request",
        "Answers per minute",
        "Tokens by model",
        "Cost by model",
        "Retries and 429s over time",
    )
    for title in titles:
        assert title in page


def test_an_empty_output_still_renders(tmp_path: Path) -> None:
    out = write_parquet(tmp_path / "out.parquet", [])
    page = render_html(report([out]))
    assert "no latencies recorded" in page and "no rows" in page


# --- models as gateways spell them, several outputs, warnings -------------------------------


def test_rows_are_grouped_by_the_model_their_name_resolves_to(tmp_path: Path) -> None:
    rows = [
        row(0, model="claude-haiku-4-5-20251001"),
        row(1, model="anthropic/claude-haiku-4.5", cost_usd=None),  # priced at report time
        row(2, model="us.anthropic.claude-haiku-4-5-20251001-v1:0"),
        row(3, model="claude-haiku-4-6", cost_usd=None),  # a typo: no price
    ]
    rep = report([write_parquet(tmp_path / "o.parquet", rows)])
    assert set(rep.models) == {"claude-haiku-4-5", "claude-haiku-4-6"}
    haiku = rep.models["claude-haiku-4-5"]
    assert (haiku.rows, haiku.ok) == (3, 3)
    assert haiku.spellings == {
        "claude-haiku-4-5-20251001": 1,
        "anthropic/claude-haiku-4.5": 1,
        "us.anthropic.claude-haiku-4-5-20251001-v1:0": 1,
    }
    assert haiku.cost_usd == pytest.approx(2 * 0.00015 + (100 * 1 + 10 * 5) / 1e6)
    assert rep.priced_now == 1 and rep.unpriced == 1
    assert rep.models["claude-haiku-4-6"].unpriced == 1
    text = format_report(rep)
    table = [line.split() for line in text.splitlines() if line.startswith("    claude-")]
    assert [cells[0] for cells in table] == ["claude-haiku-4-5", "claude-haiku-4-6"]
    assert "as anthropic/claude-haiku-4.5 (1), claude-haiku-4-5-20251001 (1)," in text
    assert "no price (claude-haiku-4-6)" in text
    data = json.loads(json.dumps(rep.to_dict()))
    assert data["models"]["claude-haiku-4-5"]["spellings"]["anthropic/claude-haiku-4.5"] == 1
    assert "spellings" not in data["via"]["online"]
    assert "as anthropic/claude-haiku-4.5 (1)" in render_html(rep)


def _partial_output(path: Path, rows: list[dict[str, Any]], of: int) -> Path:
    """A stopped run's output: the rows it finished, marked partial, and its journal."""
    table = pa.Table.from_pylist(rows, schema=output_schema())
    pq.write_table(table.replace_schema_metadata(partial_metadata(Partial(len(rows), of))), path)
    write_journal(path, list(enumerate(rows)))
    return path


def test_several_outputs_get_a_line_each_with_their_state_then_the_totals(
    tmp_path: Path,
) -> None:
    final = write_parquet(tmp_path / "final.parquet", sample_rows())
    partial = _partial_output(tmp_path / "partial.parquet", [row(0), row(1)], of=5)
    journal_only = tmp_path / "pending.parquet"
    write_journal(journal_only, [(0, row(0, status="error", cost_usd=None, stop_reason=None))])
    rep = report([final, partial, journal_only])
    assert [(t.state, t.ok, t.error) for t in rep.per_source] == [
        ("final", 9, 1),
        ("partial", 2, 0),
        ("journal only", 0, 1),
    ]
    assert rep.per_source[0].cost_usd == pytest.approx(8 * 0.00015 + 0.01)
    assert rep.per_source[1].cost_usd == pytest.approx(2 * 0.00015)
    assert sum(t.cost_usd for t in rep.per_source) == pytest.approx(rep.cost_usd)

    lines = format_report(rep).splitlines()
    assert lines[0] == "batchrun report: 3 outputs"
    outputs = lines[1:4]
    assert all(line.startswith("  output      ") for line in outputs)
    assert str(final) in outputs[0] and "ok 9, error 1" in outputs[0]
    assert "$0.0112" in outputs[0] and outputs[0].endswith("(final)")
    assert "2 rows: ok 2, error 0" in outputs[1] and "partial: 2 of 5 rows" in outputs[1]
    assert "ok 0, error 1" in outputs[2] and "journal only" in outputs[2]
    assert lines[4] == "  all outputs 13 rows"
    assert lines[5].startswith("  rows        13: ok 11, error 2")

    sources = rep.to_dict()["sources"]
    assert [s["state"] for s in sources] == ["final", "partial", "journal only"]
    assert [(s["ok"], s["error"]) for s in sources] == [(9, 1), (2, 0), (0, 1)]
    page = render_html(rep)
    assert "ok 9, error 1" in page and "partial: 2 of 5 rows" in page


def test_one_output_keeps_its_one_header_line(tmp_path: Path) -> None:
    out = write_parquet(tmp_path / "out.parquet", sample_rows())
    first = format_report(report([out])).splitlines()[0]
    assert first == f"batchrun report: {out} (10 rows; final)"


def test_answers_mostly_cut_at_max_tokens_are_warned_about(tmp_path: Path) -> None:
    rows = [row(i, stop_reason="max_tokens" if i < 6 else "end_turn") for i in range(10)]
    rows.append(row(10, status="error", stop_reason=None, cost_usd=None))
    rep = report([write_parquet(tmp_path / "cut.parquet", rows)])
    assert rep.mostly_cut and rep.cut_at_max_tokens == 6 and rep.answered == 10
    (warning,) = rep.warnings()
    assert "6 of 10 answers (60%) stopped at max_tokens" in warning
    assert "Raise max_tokens" in warning
    assert f"  warning     {warning}" in format_report(rep)
    data = rep.to_dict()
    assert data["warnings"] == [warning]
    assert data["answers_cut_at_max_tokens"] == {"rows": 6, "of_answers": 10, "most": True}
    assert f"<div class='warn'>{warning}</div>" in render_html(rep)

    # Half is not most; sample_rows has one cut answer of nine.
    half = [row(i, stop_reason="max_tokens" if i < 5 else "end_turn") for i in range(10)]
    assert report([write_parquet(tmp_path / "half.parquet", half)]).warnings() == []
    rep = report([write_parquet(tmp_path / "few.parquet", sample_rows())])
    assert rep.warnings() == [] and "warning" not in format_report(rep)
    assert "class='warn'" not in render_html(rep)
    assert rep.to_dict()["answers_cut_at_max_tokens"]["most"] is False


def test_retries_and_429s_are_counted_by_when_the_row_finished(tmp_path: Path) -> None:
    rows = [
        row(0, attempts=1),
        row(1, attempts=3),  # two retries, then an answer
        row(61, attempts=2),  # the next minute
        row(
            62,
            status="error",
            stop_reason=None,
            cost_usd=None,
            attempts=5,
            http_status=429,
            error_type="rate_limit_error",
        ),
        row(63, status="error", stop_reason=None, cost_usd=None, attempts=1, http_status=500),
        row(64, attempts=None),  # an older output without attempts: no retries
        row(65, status="error", stop_reason=None, attempts=0, error_type="invalid_request"),
        # A 429 with retries off, in a row without a finish time: counted, not charted.
        row(66, status="error", stop_reason=None, attempts=1, http_status=429, finished_at=None),
    ]
    rep = report([write_parquet(tmp_path / "o.parquet", rows)])
    minute = int(T0.timestamp()) // 60
    assert rep.retries == 2 + 1 + 4
    assert rep.retries_per_minute == {minute: 2, minute + 1: 5}
    assert rep.rate_limited == 2 and rep.rate_limited_per_minute == {minute + 1: 1}
    second = int(T0.timestamp())
    assert rep.retries_per_second == {second + 1: 2, second + 61: 1, second + 62: 4}
    assert "retries     7 (attempts past the first); 2 rows ended on a 429" in format_report(rep)
    data = rep.to_dict()
    assert (data["retries"], data["rows_rate_limited"]) == (7, 2)
    page = render_html(rep)
    assert "Retries and 429s over time" in page
    assert "retries (7)" in page and "ended on a 429 (2)" in page


def test_a_run_without_retries_says_so_in_the_retries_chart(tmp_path: Path) -> None:
    rep = report([write_parquet(tmp_path / "o.parquet", [row(i) for i in range(3)])])
    assert "no retries and no 429s" in render_html(rep)


# --- SVG geometry ---------------------------------------------------------------------------

_TEXT = re.compile(r"<text x='([-\d.]+)' y='([-\d.]+)' text-anchor='(\w+)'[^>]*>([^<]*)</text>")


def _texts(svg: str) -> list[tuple[float, float, str, str]]:
    return [(float(x), float(y), anchor, text) for x, y, anchor, text in _TEXT.findall(svg)]


def _extent(x: float, anchor: str, text: str) -> tuple[float, float]:
    width = text_width(unescape(text))
    if anchor == "start":
        return x, x + width
    if anchor == "end":
        return x - width, x
    return x - width / 2, x + width / 2


def _close_percentiles() -> LogHistogram:
    """p90 and p99 a hair apart at the far right, p50 far left: the labels' worst case."""
    hist = LogHistogram()
    hist.add(pa.array([100.0] * 880 + [9000.0] * 100 + [9100.0] * 20))
    return hist


def test_percentile_labels_never_overlap_and_stay_inside_the_chart() -> None:
    for hist in (_close_percentiles(), _one_value()):
        svg = latency_chart(hist)
        labels = [t for t in _texts(svg) if re.match(r"p(50|90|99) ", t[3])]
        assert len(labels) == 3
        assert len({y for _, y, _, _ in labels}) == 1  # one row: only x keeps them apart
        spans = sorted(_extent(x, anchor, text) for x, _, anchor, text in labels)
        for (_, right), (left, _) in itertools.pairwise(spans):
            assert left - right >= LABEL_GAP - 0.01
        assert all(left >= 0 and right <= WIDTH for left, right in spans)


def _one_value() -> LogHistogram:
    """Every latency alike: the three lines coincide."""
    hist = LogHistogram()
    hist.add(pa.array([250.0] * 50))
    return hist


def test_the_label_placement_keeps_order_and_gaps() -> None:
    widths = [60.0, 70.0, 80.0]
    lefts = place_labels([100.0, 105.0, 500.0], widths, 0.0, 540.0)
    assert lefts is not None
    assert lefts[0] == 100.0  # room where it wants to be: left alone
    assert lefts[1] == 100.0 + 60 + LABEL_GAP  # pushed clear of the first
    assert lefts[2] == 540.0 - 80  # pulled inside the right edge
    crowded = place_labels([530.0, 531.0, 532.0], widths, 0.0, 540.0)
    assert crowded is not None and crowded[2] + widths[2] <= 540.0
    assert crowded[1] + widths[1] + LABEL_GAP <= crowded[2] + 1e-9
    assert crowded[0] + widths[0] + LABEL_GAP <= crowded[1] + 1e-9
    assert place_labels([0.0, 1.0], [300.0, 300.0], 0.0, 540.0) is None  # cannot fit


def test_every_axis_label_lies_inside_the_svg(tmp_path: Path) -> None:
    rows = [
        row(
            i,
            latency_ms=80.0 + 4.6 * i,  # up to 995 ms: a 1,000 ms tick at the right edge
            attempts=1 + i % 3,
            finished_at=T0 + timedelta(seconds=7 * i),
        )
        for i in range(200)
    ]
    rep = report([write_parquet(tmp_path / "o.parquet", rows)])
    page = render_html(rep)
    svgs = re.findall(r"<svg viewBox='0 0 (\d+) (\d+)'.*?</svg>", page, re.S)
    assert len(svgs) == 5
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        width = int(re.search(r"viewBox='0 0 (\d+) ", svg).group(1))  # type: ignore[union-attr]
        texts = _texts(svg)
        assert texts
        for x, _, anchor, text in texts:
            left, right = _extent(x, anchor, text)
            assert left >= 0 and right <= width, (text, left, right)


def test_throughput_is_per_minute_in_the_card_the_chart_and_the_text(tmp_path: Path) -> None:
    # 1,200 rows in one minute: 1,200 rows/min, which the card once showed as "20.0/s".
    rows = [row(i, finished_at=T0 + timedelta(milliseconds=50 * i)) for i in range(1200)]
    rep = report([write_parquet(tmp_path / "o.parquet", rows)])
    assert rep.rows_per_minute == pytest.approx(1200 / (59.95 / 60))
    page = render_html(rep)
    card = re.search(r"Throughput</div><div class='v'>([^<]*)<", page)
    assert card is not None and card.group(1).endswith("/min") and "/s" not in card.group(1)
    assert "shown per minute" in page
    assert "rows/min" in format_report(rep)
    # Each one-second bar holds 20 rows: drawn as 1,200 a minute, the axis' unit.
    chart = throughput_chart(rep)
    ticks = [float(t.replace(",", "")) for _, _, a, t in _texts(chart) if a == "end"]
    assert max(ticks) >= 1200 and max(ticks) < 2400
