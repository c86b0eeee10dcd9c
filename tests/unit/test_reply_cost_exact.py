"""``PriceTable.reply_cost`` prices in integers where that is exact: the same float,
bit for bit, as ``float(cost_at(...))`` on the Decimal path, for every input."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import replace
from decimal import Decimal, localcontext
from typing import Any

import pytest

from batchrun.cost.prices import LongContext, PriceTable, Rates, Usage, default_prices

D = Decimal


def _old_count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _old_usage(usage: Mapping[str, Any]) -> Usage:
    """``Usage.from_api`` as it was before the integer path."""
    written = _old_count(usage.get("cache_creation_input_tokens"))
    split = usage.get("cache_creation")
    w1h = _old_count(split.get("ephemeral_1h_input_tokens")) if isinstance(split, Mapping) else 0
    w5m = _old_count(split.get("ephemeral_5m_input_tokens")) if isinstance(split, Mapping) else 0
    w5m = max(w5m, written - w1h)
    tools = usage.get("server_tool_use")
    searches = _old_count(tools.get("web_search_requests")) if isinstance(tools, Mapping) else 0
    return Usage(
        input_tokens=_old_count(usage.get("input_tokens")),
        output_tokens=_old_count(usage.get("output_tokens")),
        cache_write_5m=w5m,
        cache_write_1h=w1h,
        cache_read=_old_count(usage.get("cache_read_input_tokens")),
        web_search_requests=searches,
        batch=usage.get("service_tier") == "batch",
    )


def _old_reply_cost(table: PriceTable, model: str, usage: Mapping[str, Any]) -> float | None:
    price = table.lookup(model)
    return None if price is None else float(table.cost_at(price, _old_usage(usage)))


def _same(new: float | None, old: float | None) -> bool:
    if new is None or old is None:
        return new is old
    if math.isnan(old):
        return math.isnan(new)
    return new == old and math.copysign(1, new) == math.copysign(1, old)


_COUNTS = [0, 1, 2, 31, 999, 10**3, 123_457, 199_999, 200_000, 200_001, 10**6, 987_654_321]
_ODD = [None, -5, True, False, 3.5, "12", 10**20, 2**63 - 1, 10**30]


def _usages(rng: random.Random, n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(n):
        pick = (lambda: rng.choice(_ODD)) if i % 7 == 0 else (lambda: rng.choice(_COUNTS))
        usage: dict[str, Any] = {
            "input_tokens": pick(),
            "output_tokens": pick(),
            "cache_read_input_tokens": rng.choice([None, 0, *_COUNTS]),
            "cache_creation_input_tokens": rng.choice([None, 0, *_COUNTS]),
            "service_tier": rng.choice(["batch", "standard", None, "priority"]),
        }
        shape = i % 4
        if shape == 1:
            usage["cache_creation"] = {
                "ephemeral_5m_input_tokens": pick(),
                "ephemeral_1h_input_tokens": rng.choice(_COUNTS),
            }
        elif shape == 2:
            usage["cache_creation"] = rng.choice([[1], "x", 5])
        if i % 5 == 0:
            usage["server_tool_use"] = {"web_search_requests": rng.choice([0, 1, 3, 250, None])}
        out.append(usage)
    return out


def test_every_packaged_model_costs_the_same_as_on_the_decimal_path() -> None:
    table = default_prices()
    rng = random.Random(2026)
    usages = _usages(rng, 400)
    for price in table.models():
        for usage in usages:
            new = table.reply_cost((price.model, None), usage)
            assert _same(new, _old_reply_cost(table, price.model, usage)), (price.model, usage)


def _odd_tables() -> list[PriceTable]:
    base = default_prices()
    haiku = base.lookup("claude-haiku-4-5")
    assert haiku is not None
    third = D(1) / D(3)  # 28 digits: the integer path is past its bound, Decimal prices
    odd_rates = [
        Rates(D("0.333333333333"), D("1.7"), D("2.123456789"), D("0.03"), D("17.5")),
        Rates(third, third, third, third, third),
        Rates(D("1E+2"), D("5E+1"), D(0), D("0"), D("1E-9")),
        Rates(D(-1), D(5), D(1), D(1), D(1)),  # a rate below 0: only Python makes one
    ]
    tables = []
    for i, rates in enumerate(odd_rates):
        long = LongContext(1000, replace(rates, input=rates.input * 2)) if i % 2 else None
        price = replace(haiku, rates=rates, long_context=long)
        for factor, search in [(D("0.5"), D(10)), (D(0), D("0.001")), (D("0.333"), D("12.5"))]:
            tables.append(
                PriceTable(
                    entries={"claude-haiku-4-5": price},
                    batch_price_factor=factor,
                    web_search_per_1000=search,
                )
            )
    return tables


@pytest.mark.parametrize("table", _odd_tables())
def test_odd_rates_and_factors_cost_the_same_as_on_the_decimal_path(table: PriceTable) -> None:
    rng = random.Random(26)
    for usage in _usages(rng, 300):
        new = table.reply_cost(("claude-haiku-4-5", None), usage)
        assert _same(new, _old_reply_cost(table, "claude-haiku-4-5", usage)), usage


def test_a_context_of_less_precision_prices_as_it_did() -> None:
    table = default_prices()
    usage = {"input_tokens": 987_654_321, "output_tokens": 123_457, "service_tier": "batch"}
    with localcontext() as context:
        context.prec = 6
        assert _same(
            table.reply_cost(("claude-sonnet-4-5", None), usage),
            _old_reply_cost(table, "claude-sonnet-4-5", usage),
        )


def test_usage_from_api_reads_the_fields_as_it_did() -> None:
    for usage in _usages(random.Random(7), 500):
        assert Usage.from_api(usage) == _old_usage(usage)


def test_the_integer_path_prices_the_usual_replies() -> None:
    """Not a fallback in disguise: every packaged model's usual reply takes it."""
    table = default_prices()
    usage = {"input_tokens": 31, "output_tokens": 2, "service_tier": "batch"}
    for price in table.models():
        parts = (31, 2, 0, 0, 0, 0, True)
        assert table._exact_cost(price, parts) == _old_reply_cost(table, price.model, usage)
