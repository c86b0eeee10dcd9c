"""The estimate counts what the run caches and deduplicates; the summary and the report say
what caching and dedup saved (issue 17, item 4). Figures are checked against hand sums."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import TEST_KEY, write_jsonl

from batchrun import load_config, run
from batchrun.config.load import RunConfig
from batchrun.cost.prices import cache_saving, cached_cost, default_prices, uncached_cost
from batchrun.engine.outcome import RowSettings, prepare
from batchrun.estimation.caching import marked_prefix, marked_prefix_tokens
from batchrun.estimation.passes import estimate
from batchrun.formats.inputs import read_rows
from batchrun.render.estimate_text import format_estimate
from batchrun.render.report_html import render_html
from batchrun.render.report_text import format_report
from batchrun.render.summary import caching_saved_usd, format_summary, summary_dict
from batchrun.reporting.totals import report
from batchrun.rows.tokens import CHARS_PER_TOKEN, MESSAGE_OVERHEAD_TOKENS
from batchrun.runs.summary import RunSummary
from batchrun.simulator import SimulatorThread
from batchrun.store.columns import blank_row
from batchrun.store.latest import latest_batches
from batchrun.store.sink import FinalCounts, output_schema

MODEL = "claude-haiku-4-5"  # cache minimum 4,096 tokens; $1/M in, 1.25 write, 0.1 read, $5 out
LONG_HEAD = "Label the review carefully. " * 1000  # 28,000 chars: about 5,545 local tokens
SHORT_HEAD = "Label the review carefully. " * 300  # 8,400 chars: about 1,666, below 4,096
TEMPLATE_TAIL = "\n\nReview:\n{text}"  # the static head runs to the first {field}
HAIKU = default_prices().lookup(MODEL)
assert HAIKU is not None


def config_for(inp: Path, out: Path, head: str, **flags: Any) -> RunConfig:
    settings = {
        "output": str(out),
        "model": MODEL,
        "max_tokens": 20,
        "template": head + TEMPLATE_TAIL,
        "quiet": True,
        "concurrency": 4,
        **flags,
    }
    return load_config(inp, settings, environ={"ANTHROPIC_API_KEY": TEST_KEY})


def review_rows(distinct: int, copies: int = 0) -> list[dict[str, Any]]:
    """``distinct`` different rows, then ``copies`` rows repeating the first ones' text."""
    rows = [{"id": f"r{i}", "text": f"review number {i}"} for i in range(distinct)]
    rows += [{"id": f"copy{i}", "text": f"review number {i}"} for i in range(copies)]
    return rows


def head_text(head: str) -> str:
    return head + TEMPLATE_TAIL.removesuffix("{text}")


def head_tokens(head: str) -> int:
    """The local estimate of the prefix by hand: the template head's text and one turn's
    overhead."""
    return math.ceil(len(head_text(head)) / CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS)


def first_body(config: RunConfig) -> dict[str, Any]:
    body = prepare(next(iter(read_rows(config.input.path))), RowSettings.of(config)).body
    assert body is not None
    return body


# --- the prefix of a marked request ------------------------------------------------------------


def test_the_marked_prefix_is_measured_as_the_breakpoint_was_placed(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", review_rows(1))
    body = first_body(config_for(inp, tmp_path / "out.jsonl", LONG_HEAD))
    prefix = marked_prefix(body)
    turn = {"role": "user", "content": [{"type": "text", "text": head_text(LONG_HEAD)}]}
    assert prefix == {"messages": [turn]}
    assert marked_prefix_tokens(body) == head_tokens(LONG_HEAD)
    system_marked = {
        "system": [{"type": "text", "text": "a " * 10, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert marked_prefix(system_marked) == {"system": [{"type": "text", "text": "a " * 10}]}
    assert marked_prefix({"messages": [{"role": "user", "content": "hi"}]}) is None


# --- offline -----------------------------------------------------------------------------------


def test_offline_counts_one_write_per_group_reads_for_the_rest_and_duplicates_free(
    tmp_path: Path,
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", review_rows(30, copies=6))
    config = config_for(inp, tmp_path / "out.jsonl", LONG_HEAD)
    est = estimate(config)

    (line,) = est.models.values()
    assert (line.pending, line.duplicates) == (30, 6)
    prefix = head_tokens(LONG_HEAD)
    assert (line.cache_groups, line.cache_writes, line.cache_reads) == (1, 1, 29)
    assert (line.prefix_write_tokens, line.prefix_read_tokens) == (prefix, 29 * prefix)
    # At $1/M: a write adds 0.25 a token, each read takes 0.9 off.
    delta = (prefix * Decimal("0.25") - 29 * prefix * Decimal("0.9")) / 1_000_000
    assert line.cache_delta() == pytest.approx(float(delta))
    uncached = line.cost_floor(cached=False)
    assert uncached == pytest.approx(line.pending_input / 1_000_000)  # input alone, $1/M
    assert line.cost_floor() == pytest.approx(uncached + float(delta))
    assert est.total_floor(batch=True) == pytest.approx((uncached + float(delta)) * 0.5)

    text = format_estimate(est)
    assert "6 duplicates filled from an identical request ($0)" in text
    assert "1 write(s) (5m, 1.25x), 29 reads (0.1x)" in text
    assert "without caching (cache='off')" in text
    assert "not modelled" not in text
    data = est.to_dict()
    assert data["total"]["duplicates"] == 6
    assert data["total"]["cache_writes"] == 1 and data["total"]["cache_reads"] == 29
    assert data["total"]["caching_saves_usd_online"] == pytest.approx(-float(delta), abs=1e-6)
    assert data["total"]["uncached"]["cost_usd_floor_online"] == pytest.approx(uncached, abs=1e-6)


def test_a_one_hour_ttl_writes_at_twice_the_input_price(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", review_rows(10))
    est = estimate(config_for(inp, tmp_path / "out.jsonl", LONG_HEAD, cache_ttl="1h"))
    (line,) = est.models.values()
    prefix = head_tokens(LONG_HEAD)
    assert line.cache_ttl == "1h"
    assert line.cache_delta() == pytest.approx((prefix * 1.0 - 9 * prefix * 0.9) / 1_000_000)


def test_below_the_minimum_or_with_dedup_off_nothing_is_discounted(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", review_rows(10, copies=3))
    est = estimate(config_for(inp, tmp_path / "out.jsonl", SHORT_HEAD, dedup=False))
    (line,) = est.models.values()
    assert (line.pending, line.duplicates, line.cache_groups) == (13, 0, 0)
    assert line.cache_delta() == 0.0
    assert est.total_floor() == est.total_floor(cached=False)
    text = format_estimate(est)
    assert "without caching" not in text and "no breakpoint is placed" in text


# --- exact and pilot against the simulator -----------------------------------------------------


def test_exact_scales_the_prefix_by_the_groups_counted_ratio(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", review_rows(12, copies=3))
    config = config_for(inp, tmp_path / "out.jsonl", LONG_HEAD, base_url=sim.base_url)
    offline = estimate(config)
    exact = estimate(config, exact=True, count_rpm=100_000)

    (line,) = exact.models.values()
    (local,) = offline.models.values()
    assert exact.counted == 12 and line.duplicates == 3  # duplicates are not even counted
    ratio = line.pending_input / local.pending_input  # counted / estimated, the same rows
    assert line.prefix_write_tokens == pytest.approx(head_tokens(LONG_HEAD) * ratio)
    assert (line.cache_writes, line.cache_reads) == (1, 11)


def test_a_pilot_measures_the_prefix_and_the_estimate_meets_the_bill(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    out = tmp_path / "out.jsonl"
    inp = write_jsonl(tmp_path / "in.jsonl", review_rows(40, copies=5))
    config = config_for(inp, out, LONG_HEAD, base_url=sim.base_url)
    est = estimate(config, pilot="8", seed=1)

    columns = ("cache_creation_input_tokens", "cache_read_input_tokens", "duplicate_of")
    answered = [r for batch in latest_batches(out, columns) for r in batch.to_pylist()]
    cached = sorted(
        r["cache_creation_input_tokens"] + r["cache_read_input_tokens"]
        for r in answered
        if r["duplicate_of"] is None
    )
    (line,) = est.models.values()
    assert cached[0] > 4096 and line.prefix_write_tokens == pytest.approx(
        cached[len(cached) // 2] if len(cached) % 2 else sum(cached[3:5]) / 2
    )
    sent_later = line.pending
    assert line.cache_writes == 1 and line.cache_reads == sent_later - 1
    expected = est.total_cost()
    uncached = est.total_cost(cached=False)
    assert expected is not None and uncached is not None and expected[1] < 0.4 * uncached[1]

    summary = run(config)
    assert summary.exit_code == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    billed = sum(r["cost_usd"] or 0.0 for r in rows)
    # The estimate counts one write more than this run paid (the pilot's entry was still
    # warm), which on 45 rows is a few percent: within a quarter, not a timing threshold.
    assert expected[1] == pytest.approx(billed, rel=0.25)


def test_a_row_identical_to_one_already_answered_costs_nothing(
    tmp_path: Path, sim: SimulatorThread
) -> None:
    out = tmp_path / "out.jsonl"
    first = write_jsonl(tmp_path / "first.jsonl", review_rows(5))
    assert run(config_for(first, out, SHORT_HEAD, base_url=sim.base_url)).exit_code == 0
    # The same output, now with three more rows repeating answered ones and one new row.
    more = review_rows(5)
    more += [{"id": f"again{i}", "text": f"review number {i}"} for i in range(3)]
    more.append({"id": "new", "text": "a new review"})
    inp = write_jsonl(tmp_path / "in.jsonl", more)
    est = estimate(config_for(inp, out, SHORT_HEAD, base_url=sim.base_url))
    (line,) = est.models.values()
    assert (line.answered, line.pending, line.duplicates) == (5, 1, 3)


# --- what the summary and the report say was saved ---------------------------------------------


def test_cache_saving_by_hand() -> None:
    rates = HAIKU.rates
    # 6,000 written (5 m) and 6,000 read: plain 12,000 x $1/M = $0.012; cached 7,500 + 600.
    assert uncached_cost(rates, 6000, 0, 6000) == Decimal("0.012")
    assert cached_cost(rates, 6000, 0, 6000) == Decimal("0.0081")
    assert cache_saving(rates, 6000, 0, 6000) == Decimal("0.0039")
    assert cache_saving(rates, 0, 6000, 0) == Decimal("-0.006")  # a 1 h write never read
    assert cache_saving(rates, 6000, 0, 6000, Decimal("0.5")) == Decimal("0.00195")


def test_the_summary_shows_what_caching_and_dedup_saved(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", review_rows(1))
    config = config_for(inp, tmp_path / "out.jsonl", LONG_HEAD)
    summary = RunSummary(
        input=inp,
        output=tmp_path / "out.jsonl",
        ok=3,
        input_tokens=300,
        output_tokens=30,
        cache_creation_input_tokens=6000,
        cache_read_input_tokens=6000,
        cost_usd=0.0087,
        final=FinalCounts(rows=3, ok=3, error=0),
    )
    summary.deduplicated = 1
    summary.dedup_saved_usd = 0.0008
    assert caching_saved_usd(summary, config) == pytest.approx(0.0039)
    text = format_summary(summary, config)
    assert "saved       caching $0.003900 (6,000 tokens read at 0.1x, 6,000 written)" in text
    assert "dedup $0.000800 (1 rows filled from an identical request)" in text
    saved = summary_dict(summary, config)["saved"]
    assert saved["caching_usd"] == pytest.approx(0.0039) and saved["dedup_rows"] == 1
    assert summary_dict(summary)["saved"]["caching_usd"] is None  # no prices without config


def test_the_summary_prices_writes_by_the_ttl_the_api_reported(tmp_path: Path) -> None:
    """6,000 tokens written, 4,000 of them reported as 1-hour writes (a row's own mark), under
    a job marking 5-minute ones: 2,000 x (1 - 1.25) + 4,000 x (1 - 2) = -4,500 token-dollars
    per million, plus 6,000 read x 0.9 = 5,400: $0.0009 saved at Haiku's $1/M input."""
    inp = write_jsonl(tmp_path / "in.jsonl", review_rows(1))
    config = config_for(inp, tmp_path / "out.jsonl", LONG_HEAD)
    summary = RunSummary(
        input=inp,
        output=tmp_path / "out.jsonl",
        ok=3,
        cache_creation_input_tokens=6000,
        cache_creation_1h_input_tokens=4000,
        cache_read_input_tokens=6000,
    )
    assert caching_saved_usd(summary, config) == pytest.approx(0.0009)


def test_the_report_shows_what_caching_and_dedup_saved(tmp_path: Path) -> None:
    t0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)

    def row(row_id: str, i: int, **fields: Any) -> dict[str, Any]:
        r = blank_row(row_id)
        r.update(status="ok", model="claude-haiku-4-5-20251001", stop_reason="end_turn")
        r.update(input_tokens=100, output_tokens=10, cache_creation_input_tokens=0)
        r.update(cache_read_input_tokens=0, attempts=1, latency_ms=100.0, elapsed_ms=100.0)
        r.update(finished_at=t0 + timedelta(seconds=i), **fields)
        return r

    # r0 writes the 6,000-token prefix, r1 and r2 read it; d1 and d2 repeat r1's request.
    zero = {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
    rows = [
        row("r0", 0, cache_creation_input_tokens=6000, cache_creation_5m_input_tokens=6000,
            cost_usd=0.00765),
        row("r1", 1, cache_read_input_tokens=6000, cost_usd=0.00075),
        row("r2", 2, cache_read_input_tokens=6000, cost_usd=0.00075),
        row("d1", 3, duplicate_of="r1", **zero),
        row("d2", 4, duplicate_of="r1", **zero),
    ]  # fmt: skip
    path = tmp_path / "out.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=output_schema()), path)
    rep = report([path])

    # Plain: 18,000 x $1/M = $0.018. Cached: 6,000 x 1.25 + 12,000 x 0.1 = $0.0087.
    assert rep.cache_saved_usd == pytest.approx(0.0093)
    assert (rep.duplicates, rep.dedup_saved_usd) == (2, pytest.approx(0.0015))
    text = format_report(rep)
    assert "saved       caching $0.009300 (12,000 tokens read at 0.1x, 6,000 written); " in text
    assert "dedup $0.001500 (2 rows filled from an identical request)" in text
    assert rep.to_dict()["saved"]["dedup_usd"] == pytest.approx(0.0015)
    assert "Saved" in render_html(rep)
