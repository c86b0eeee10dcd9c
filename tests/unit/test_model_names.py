"""Model names as gateways spell them resolve to the price table, for pricing and grouping only.

The model string sent to the API is never rewritten; an unknown name gets a did-you-mean.
"""

from __future__ import annotations

import asyncio
import io
import json
from decimal import Decimal
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from support import TEST_KEY, canned_message, prompts, write_jsonl

from batchrun import load_config, run
from batchrun.cost.budget import Budget, is_price_stop, no_price_stop
from batchrun.cost.prices import (
    UnknownModels,
    Usage,
    canonical_model,
    default_prices,
    did_you_mean,
    load_prices,
    undated_model,
    unknown_model_warning,
)
from batchrun.estimation.passes import estimate
from batchrun.render.estimate_text import format_estimate
from batchrun.runs.runtime import Runtime

# --- resolution (pure) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spelling", "key"),
    [
        # dots for dashes in the version (OpenRouter, LiteLLM and others)
        ("claude-haiku-4.5", "claude-haiku-4-5"),
        ("claude-sonnet-4.6", "claude-sonnet-4-6"),
        ("claude-opus-4.6", "claude-opus-4-6"),
        # provider prefixes, one or two deep, and a tag after a colon
        ("anthropic/claude-haiku-4-5", "claude-haiku-4-5"),
        ("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("openrouter/anthropic/claude-opus-4.1:beta", "claude-opus-4-1"),
        # Bedrock: vendor prefix, inference-profile region, version tail, an ARN
        ("anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("global.anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
        ("bedrock/eu.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4-0"),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/"
            "us.anthropic.claude-haiku-4-5-20251001-v1:0",
            "claude-haiku-4-5",
        ),
        # Vertex: the date after an @
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("vertex_ai/claude-opus-4-1@20250805", "claude-opus-4-1"),
        # dated ids, listed and unlisted (a new snapshot is priced as its alias)
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-opus-4-6-20991231", "claude-opus-4-6"),
        # a major version alone, the Claude 3 word order, -latest, capitals
        ("anthropic/claude-sonnet-4", "claude-sonnet-4-0"),
        ("claude-4-opus-20250514", "claude-opus-4-0"),
        ("claude-opus-5-0", "claude-opus-5"),
        ("claude-sonnet-4-5-latest", "claude-sonnet-4-5"),
        (" Claude-Haiku-4.5 ", "claude-haiku-4-5"),
    ],
)
def test_gateway_spellings_resolve_to_the_table_entry(spelling: str, key: str) -> None:
    table = default_prices()
    price = table.lookup(spelling)
    assert price is not None and price.model == key
    assert table.resolve(spelling) == key


def test_gateway_spellings_are_priced_like_the_id() -> None:
    table = default_prices()
    u = Usage(input_tokens=1000, output_tokens=200)
    expected = table.cost("claude-haiku-4-5", u)
    assert expected == Decimal("0.002")
    for spelling in ("claude-haiku-4.5", "anthropic/claude-haiku-4.5", "claude-haiku-4-5-20251001"):
        assert table.cost(spelling, u) == expected
    record = {"input_tokens": 1000, "output_tokens": 200}
    assert table.reply_cost(("us.anthropic.claude-haiku-4-5-20251001-v1:0",), record) == 0.002


@pytest.mark.parametrize(
    "name",
    ["gpt-4o", "openai/gpt-4o", "claude-3-5-haiku-20241022", "claude-haiku-4-6", "", "claude"],
)
def test_names_that_are_not_in_the_table_stay_unpriced(name: str) -> None:
    assert default_prices().lookup(name) is None


def test_an_exact_id_in_a_user_file_wins_over_resolution(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[models."mygateway/claude-haiku-4-5"]\ninput = 2\noutput = 10\n', encoding="utf-8"
    )
    table = load_prices(path)
    special = table.lookup("mygateway/claude-haiku-4-5")
    assert special is not None and special.rates.input == Decimal(2)
    # Another gateway's spelling still means the packaged entry.
    other = table.lookup("othergateway/claude-haiku-4-5")
    assert other is not None and other.rates.input == Decimal(1)


def test_canonical_and_undated_names() -> None:
    assert canonical_model("us.anthropic.claude-haiku-4-5-20251001-v1:0") == (
        "claude-haiku-4-5-20251001"
    )
    assert canonical_model("claude-3-5-haiku") == "claude-haiku-3-5"
    # The name an unpriced model is grouped under keeps its own word order: it is shown.
    assert undated_model("anthropic.claude-3-5-haiku-20241022-v1:0") == "claude-3-5-haiku"
    assert undated_model("gpt-4o") == "gpt-4o" and undated_model(None) == "(none)"
    assert default_prices().resolve("anthropic.claude-3-5-haiku-20241022-v1:0") == (
        "claude-3-5-haiku"
    )


# --- did you mean -----------------------------------------------------------------------------


def test_an_unknown_name_suggests_the_closest_models_of_its_family() -> None:
    table = default_prices()
    assert table.suggest("claude-haiku-4-6") == ["claude-haiku-4-5", "claude-haiku-5-5"]
    assert table.suggest("claude-sonet-4-6")[0] == "claude-sonnet-4-6"
    haiku = {"claude-haiku-4-5", "claude-haiku-5-5"}
    assert set(table.suggest("claude-3-5-haiku-20241022")) == haiku
    opus = table.suggest("claude-opus-4-9")
    assert opus and all(name.startswith("claude-opus-") for name in opus)
    assert table.suggest("gpt-4o") == [] and table.suggest("claude-mystery-1") == []
    assert did_you_mean("gpt-4o") == ""
    assert did_you_mean("claude-haiku-4-6") == (
        " (did you mean 'claude-haiku-4-5' or 'claude-haiku-5-5'?)"
    )
    # A retired model is never suggested: the API no longer serves it.
    assert "claude-opus-4-1" not in table.suggest("claude-opus-4-2")


def test_the_run_warning_names_the_closest_models_once() -> None:
    seen = UnknownModels(default_prices())
    lines: list[str] = []
    for _ in range(3):
        seen.check({"status": "ok", "model": "claude-haiku-4-6", "cost_usd": None}, lines.append)
    assert len(lines) == 1
    assert "no price for model 'claude-haiku-4-6'" in lines[0]
    assert "did you mean 'claude-haiku-4-5' or 'claude-haiku-5-5'?" in lines[0]
    assert "prices=FILE" in lines[0] and "Fix the model name" in lines[0]


def test_the_suggestions_come_from_the_table_the_run_uses(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[models.claude-zeta-1]\ninput = 1\noutput = 2\n", encoding="utf-8")
    warning = unknown_model_warning("claude-zeta-2", load_prices(path))
    assert "did you mean 'claude-zeta-1'?" in warning


def test_the_estimate_groups_spellings_and_shows_a_gateway_alias_without_a_price(
    tmp_path: Path,
) -> None:
    rows = [
        {"prompt": "a b c", "model": "claude-haiku-4.5"},
        {"prompt": "a b c", "model": "anthropic/claude-haiku-4-5"},
        {"prompt": "a b c", "model": "my-gateway-fast"},
        {"prompt": "a b c", "model": "claude-haiku-4-6"},
    ]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    config = load_config(
        inp,
        {"output": str(tmp_path / "out.parquet"), "max_tokens": 50, "quiet": True},
        environ={"ANTHROPIC_API_KEY": TEST_KEY},
    )
    est = estimate(config)
    # The two gateway spellings are one priced model; the gateway's alias is the only
    # unknown; the mistyped Claude id is an invalid row, never sent, $0.
    assert est.models["claude-haiku-4-5"].rows == 2
    assert est.models["claude-haiku-4-5"].price is not None
    assert est.unknown_models == ["my-gateway-fast"] and est.invalid == 1
    text = format_estimate(est)
    assert "my-gateway-fast  (no price)" in text
    assert "1 invalid (never sent, $0)" in text


# --- the budget -------------------------------------------------------------------------------


def test_the_budget_bounds_a_gateway_spelling() -> None:
    budget = Budget(Decimal(1), default_prices())
    body = {"model": "claude-haiku-4.5", "max_tokens": 1000}
    # 1000 output tokens at $5/M = $0.005, plus the (small) input.
    worst = budget.worst_case(body, 10)
    assert worst is not None and Decimal("0.005") < worst < Decimal("0.006")


def test_the_budget_stop_for_an_unknown_model_says_how_to_get_past_it() -> None:
    reasons: list[str] = []
    budget = Budget(Decimal(1), default_prices(), on_stop=reasons.append)
    assert asyncio.run(budget.admit(None, "claude-haiku-4-6")) is False
    (reason,) = reasons
    assert reason == no_price_stop("claude-haiku-4-6", default_prices())
    assert "did you mean 'claude-haiku-4-5' or 'claude-haiku-5-5'?" in reason
    assert "Fix the model name or add a price with prices=FILE" in reason
    assert "re-run to resume" not in reason and "resumes" not in reason
    assert is_price_stop(reason) and is_price_stop(budget.stop_reason)
    # A stop for money is one a re-run does resume from.
    broke = Budget(Decimal(0), default_prices(), on_stop=reasons.append)
    assert asyncio.run(broke.admit(Decimal(1))) is False
    assert not is_price_stop(broke.stop_reason) and not is_price_stop(None)


# --- whole runs: priced, and the model string sent as given ---------------------------------


def test_a_run_through_a_gateway_name_is_priced_and_sends_the_name_as_given(
    tmp_path: Path,
) -> None:
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append(body["model"])
        return httpx.Response(200, json=canned_message(body["model"], input_tokens=1000))

    gateway_name = "anthropic/claude-haiku-4.5"
    inp = write_jsonl(tmp_path / "in.jsonl", prompts(5))
    out = tmp_path / "out.parquet"
    config = load_config(
        inp,
        {
            "output": str(out),
            "model": gateway_name,
            "max_tokens": 30,
            "max_cost": 1.0,
            "base_url": "https://gateway.test",
            "quiet": True,
        },
        environ={"ANTHROPIC_API_KEY": TEST_KEY},
    )
    stream = io.StringIO()
    summary = run(
        config,
        runtime=Runtime(transport=httpx.MockTransport(answer), progress_stream=stream),
    )
    assert sent == [gateway_name] * 5  # never rewritten: resolution is for prices only
    assert summary.budget_stop is None and summary.unpriced == 0 and summary.ok == 5
    # Haiku 4.5: 1000 in × $1/M + 3 out × $5/M = $0.001015 a row.
    assert summary.cost_usd == pytest.approx(5 * 0.001015)
    rows = pq.read_table(out).to_pylist()
    assert {r["model"] for r in rows} == {gateway_name}
    assert [r["cost_usd"] for r in rows] == [pytest.approx(0.001015)] * 5
    assert "no price" not in stream.getvalue()
