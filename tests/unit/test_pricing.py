"""The price table and the cost of usage records: exact amounts, overrides, unknown models."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from support import TEST_KEY, write_jsonl

from batchrun import ConfigError, load_config
from batchrun.cost.prices import (
    RATE_NAMES,
    PriceTable,
    UnknownModels,
    Usage,
    default_prices,
    load_prices,
)
from batchrun.estimation.passes import estimate
from batchrun.render.estimate_text import format_estimate

D = Decimal


def usage(**fields: object) -> Usage:
    return Usage.from_api(fields)


# --- exact costs of known usage records ------------------------------------------------------


def test_a_plain_record_is_priced_exactly() -> None:
    table = load_prices()
    # Haiku 4.5: $1 in, $5 out per million.
    cost = table.cost("claude-haiku-4-5", usage(input_tokens=1234, output_tokens=567))
    assert cost == D("0.004069")  # 1234 × 1 + 567 × 5 = 4069 µ$


def test_cache_writes_by_ttl_and_reads_are_priced_apart() -> None:
    record = {
        "input_tokens": 1000,
        "output_tokens": 500,
        "cache_creation_input_tokens": 3000,
        "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 1000},
        "cache_read_input_tokens": 3000,
        "service_tier": "standard",
    }
    # Sonnet 4.5: 1000×3 + 2000×3.75 + 1000×6 + 3000×0.30 + 500×15 = 24,900 µ$.
    assert load_prices().cost("claude-sonnet-4-5-20250929", Usage.from_api(record)) == D("0.0249")


def test_cache_creation_without_a_split_is_taken_as_5m() -> None:
    u = usage(input_tokens=10, output_tokens=10, cache_creation_input_tokens=1000)
    assert (u.cache_write_5m, u.cache_write_1h) == (1000, 0)
    # Opus 4.5: 10×5 + 1000×6.25 + 10×25 = 6,550 µ$.
    assert load_prices().cost("claude-opus-4-5", u) == D("0.00655")


def test_the_part_of_cache_creation_the_split_misses_counts_as_5m() -> None:
    u = usage(
        cache_creation_input_tokens=1500,
        cache_creation={"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 1000},
    )
    assert (u.cache_write_5m, u.cache_write_1h) == (500, 1000)


def test_the_batch_tier_pays_half() -> None:
    standard = usage(input_tokens=100_000, output_tokens=20_000)
    batch = usage(input_tokens=100_000, output_tokens=20_000, service_tier="batch")
    table = load_prices()
    # Sonnet 4.6: 100k × 3 + 20k × 15 = $0.60; batch $0.30.
    assert table.cost("claude-sonnet-4-6", standard) == D("0.6")
    assert table.cost("claude-sonnet-4-6", batch) == D("0.3")


def test_long_context_prices_every_token_of_a_request_over_200k() -> None:
    u = usage(input_tokens=150_000, cache_read_input_tokens=60_000, output_tokens=1_000)
    # 210k total input > 200k: 150k × 6 + 60k × 0.60 + 1k × 22.50 = $0.9585.
    assert load_prices().cost("claude-sonnet-4-5", u) == D("0.9585")
    under = usage(input_tokens=200_000, output_tokens=1_000)
    assert load_prices().cost("claude-sonnet-4-5", under) == D("0.615")


def test_web_searches_are_billed_per_thousand() -> None:
    u = usage(input_tokens=0, output_tokens=0, server_tool_use={"web_search_requests": 3})
    assert load_prices().cost("claude-haiku-4-5", u) == D("0.03")


def test_reply_cost_takes_the_served_model_then_the_requested_one() -> None:
    table = load_prices()
    record = {"input_tokens": 1000, "output_tokens": 1000}
    assert table.reply_cost(("claude-haiku-4-5-20251001", "x"), record) == 0.006
    assert table.reply_cost(("served-unknown", "claude-opus-4-8"), record) == 0.03
    assert table.reply_cost(("nope", None), record) is None


def test_an_unlisted_dated_snapshot_is_priced_as_its_alias() -> None:
    table = load_prices()
    assert table.lookup("claude-sonnet-5-20991231") is table.lookup("claude-sonnet-5")
    assert table.lookup("claude-unknown-20250101") is None
    assert table.cost("gpt-4o", usage(input_tokens=10)) is None


def test_an_unknown_model_is_warned_about_once() -> None:
    seen = UnknownModels()
    lines: list[str] = []
    for _ in range(3):
        seen.check({"status": "ok", "model": "claude-x", "cost_usd": None}, lines.append)
    seen.check({"status": "error", "model": "claude-y", "cost_usd": None}, lines.append)
    seen.check({"status": "ok", "model": "claude-haiku-4-5", "cost_usd": 0.1}, lines.append)
    assert len(lines) == 1 and "claude-x" in lines[0] and "prices=FILE" in lines[0]


# --- the packaged table ----------------------------------------------------------------------


def test_the_packaged_table_covers_current_models_with_sources() -> None:
    table = default_prices()
    assert table.batch_price_factor == D("0.5")
    for model_id in (
        "claude-haiku-4-5",
        "claude-haiku-4-5-20251001",
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4-6",
        "claude-opus-4-5-20251101",
        "claude-opus-4-6",
        "claude-opus-4-7",
        "claude-opus-4-8",
        "claude-opus-5",
        "claude-sonnet-5",
        "claude-opus-4-1-20250805",
        "claude-opus-4-20250514",
        "claude-sonnet-4-20250514",
        # docs/api-facts.md §11.1
        "claude-opus-5-5",
        "claude-sonnet-5-5",
        "claude-haiku-5-5",
        "claude-fable-5-2",
        "claude-fable-5-1",
        "claude-fable-5",
    ):
        assert table.lookup(model_id) is not None, model_id
    for price in table.models():
        # A date, or a note saying it was not found (limited-access Mythos models).
        dated = price.effective_from is not None or "release date" in price.note
        assert price.source and dated, price.model
        assert price.model in price.ids
        for name in RATE_NAMES:
            assert getattr(price.rates, name) > 0
        # The published cache multipliers hold, except where the entry says otherwise.
        r = price.rates
        assert r.cache_write_5m == r.input * D("1.25"), price.model
        assert r.cache_write_1h == r.input * 2, price.model
        stated = "0.05×" in price.note or "0.025×" in price.note
        assert r.cache_read == r.input * D("0.1") or stated, price.model


def test_newer_models_carry_the_prices_the_facts_give() -> None:
    table = default_prices()
    for model in ("claude-opus-4-7", "claude-opus-4-8", "claude-opus-5"):
        price = table.lookup(model)
        assert price is not None
        assert (price.rates.input, price.rates.output) == (D(5), D(25))
    sonnet5 = table.lookup("claude-sonnet-5")
    assert sonnet5 is not None and (sonnet5.rates.input, sonnet5.rates.output) == (D(2), D(10))
    opus47 = table.lookup("claude-opus-4-7")
    assert opus47 is not None and "official" in opus47.source  # no longer third-party only


# --- overrides -------------------------------------------------------------------------------


def test_a_price_file_overrides_and_extends_the_table(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        "[table]\nbatch_price_factor = 0.4\n\n"
        "[models.claude-haiku-4-5]\noutput = 4.5\n\n"
        '[models.my-gateway-model]\nids = ["gw/model-1"]\ninput = 2\noutput = 8\n',
        encoding="utf-8",
    )
    table = load_prices(path)
    haiku = table.lookup("claude-haiku-4-5-20251001")  # the dated id still maps to the override
    assert haiku is not None and haiku.rates.output == D("4.5") and haiku.rates.input == D(1)
    mine = table.lookup("gw/model-1")
    assert mine is not None
    assert (mine.rates.cache_write_5m, mine.rates.cache_write_1h, mine.rates.cache_read) == (
        D("2.50"),
        D(4),
        D("0.2"),
    )
    assert table.cost("gw/model-1", usage(input_tokens=1000, service_tier="batch")) == D("0.0008")
    assert table.sources[-1] == str(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[models.x]\ninput = 1\n", "needs output"),
        ("[models.x]\ninput = -1\noutput = 1\n", ">= 0"),
        ("[models.x]\ninput = 1\noutput = 1\ncolour = 2\n", "unknown key"),
        ("[model.x]\ninput = 1\n", "unknown section"),
        ("[models.x\n", "not valid TOML"),
        ('[models.x]\ninput = "cheap"\noutput = 1\n', "must be a number"),
    ],
)
def test_a_bad_price_file_is_refused_with_the_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "p.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_prices(path)


def test_prices_and_max_cost_come_from_the_job_file(tmp_path: Path) -> None:
    (tmp_path / "p.toml").write_text("[models.claude-z]\ninput = 1\noutput = 2\n")
    (tmp_path / "in.jsonl").write_text('{"prompt": "hi"}\n')
    job = tmp_path / "job.toml"
    job.write_text('input = "in.jsonl"\nprices = "p.toml"\nmax_cost = 2.5\nmodel = "claude-z"\n')
    config = load_config(job, environ={})
    assert config.cost.max_cost == 2.5 and config.cost.prices.lookup("claude-z") is not None
    with pytest.raises(ConfigError, match="max_cost"):
        load_config(job, {"max_cost": -1}, environ={})
    assert load_config(job, environ={"BATCHRUN_MAX_COST": "7"}).cost.max_cost == 7.0


def test_table_equality_ignores_the_lookup_index() -> None:
    assert PriceTable() == PriceTable()


# --- per-model prices of the newer models (docs/api-facts.md §11) ----------------------------


def test_haiku_5_5_bills_every_token_of_a_long_prompt_at_its_upper_band() -> None:
    table = default_prices()
    # 100,000 tokens of prompt (input + cache writes + reads) is the lower band...
    short = usage(input_tokens=90_000, cache_read_input_tokens=10_000, output_tokens=1_000)
    # 90,000 × $0.10 + 10,000 × $0.01 + 1,000 × $0.50, per million
    assert table.cost("claude-haiku-5-5", short) == D("0.0096")
    # ... one more token and every token, output included, is billed at 5x.
    long = usage(input_tokens=90_001, cache_read_input_tokens=10_000, output_tokens=1_000)
    # 90,001 × $0.50 + 10,000 × $0.05 + 1,000 × $2.50, per million
    assert table.cost("claude-haiku-5-5", long) == D("0.0480005")


def test_the_estimate_names_each_model_s_own_cache_read_price(tmp_path: Path) -> None:
    rows = [{"id": f"r{i}", "text": f"review {i}"} for i in range(5)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    text = {}
    for model in ("claude-haiku-4-5", "claude-opus-5-5", "claude-fable-5-1"):
        config = load_config(
            inp,
            {
                "output": str(tmp_path / "out.jsonl"),
                "model": model,
                "max_tokens": 20,
                "template": "Label the review carefully. " * 1000 + "\n\nReview:\n{text}",
                "quiet": True,
            },
            environ={"ANTHROPIC_API_KEY": TEST_KEY},
        )
        text[model] = format_estimate(estimate(config))
    assert "4 reads (0.1x)" in text["claude-haiku-4-5"]
    assert "4 reads (0.05x)" in text["claude-opus-5-5"]  # it said 0.1x for every model
    assert "4 reads (0.025x)" in text["claude-fable-5-1"]
