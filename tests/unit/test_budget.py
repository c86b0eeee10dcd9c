"""The --max-cost budget: worst-case reservations, settling and projections (stopping a real
run in time: tests/integration/test_budget_runs.py)."""

from __future__ import annotations

import asyncio
import math
from decimal import Decimal
from typing import Any

import pytest

from batchrun.cost.budget import INPUT_MARGIN, Budget, projected_total
from batchrun.cost.prices import load_prices
from batchrun.rows.tokens import estimate_input_tokens

HAIKU_BODY = {
    "model": "claude-haiku-4-5",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "Hello"}],
}


def test_the_worst_case_is_margined_input_plus_all_of_max_tokens() -> None:
    budget = Budget(Decimal(1), load_prices())
    worst = budget.worst_case(HAIKU_BODY, input_tokens=1000)
    tokens = math.ceil(1000 * INPUT_MARGIN)
    assert worst == (tokens * Decimal(1) + 100 * Decimal(5)) / 1_000_000


def test_a_request_that_caches_reserves_its_input_at_the_1h_write_rate() -> None:
    budget = Budget(Decimal(1), load_prices())
    body = {**HAIKU_BODY, "system": [{"type": "text", "text": "x", "cache_control": {}}]}
    tokens = math.ceil(1000 * INPUT_MARGIN)
    assert budget.worst_case(body, 1000) == (tokens * Decimal(2) + 100 * Decimal(5)) / 1_000_000


def test_a_model_without_a_price_cannot_be_bounded() -> None:
    budget = Budget(Decimal(1), load_prices())
    assert budget.worst_case({**HAIKU_BODY, "model": "claude-nope"}, 10) is None
    reasons: list[str] = []
    budget.on_stop = reasons.append
    assert asyncio.run(budget.admit(None, "claude-nope")) is False
    assert budget.stopped and len(reasons) == 1 and "claude-nope" in reasons[0]


def test_admission_waits_for_settling_before_it_gives_up() -> None:
    async def scenario() -> list[str]:
        events: list[str] = []
        budget = Budget(Decimal(10), load_prices(), on_stop=events.append)
        assert await budget.admit(Decimal(6))  # in flight, reserves 6
        waiting = asyncio.create_task(budget.admit(Decimal(6)))  # 6 + 6 > 10: must wait
        await asyncio.sleep(0)
        assert not waiting.done()
        await budget.settle(Decimal(6), Decimal(1))  # really cost 1: 1 + 6 fits now
        assert await waiting
        events.append(f"spent={budget.spent} reserved={budget.reserved}")
        third = asyncio.create_task(budget.admit(Decimal(4)))  # 1 + 6 + 4 > 10: waits
        await asyncio.sleep(0)
        await budget.settle(Decimal(6), Decimal(5))  # spent 6, nothing in flight: 6 + 4 fits
        assert await third
        await budget.settle(Decimal(4), Decimal("3.5"))  # spent 9.5
        assert not await budget.admit(Decimal(1))  # 10.5 > 10 with nothing in flight: stop
        assert not await budget.admit(Decimal("0.01"))  # stopped for good
        return events

    events = asyncio.run(scenario())
    assert events[0] == "spent=1 reserved=6"
    assert len(events) == 2 and "only $0.5000" in events[1]


def test_send_settles_with_the_rows_own_cost_even_when_it_raises() -> None:
    async def scenario() -> tuple[Decimal, Decimal, int]:
        budget = Budget(Decimal(1), load_prices())

        async def ok() -> dict[str, Any]:
            return {"status": "ok", "cost_usd": 0.0125, "input_tokens": 4}

        async def boom() -> dict[str, Any]:
            raise RuntimeError("fatal")

        assert await budget.send(HAIKU_BODY, ok) is not None
        with pytest.raises(RuntimeError):
            await budget.send(HAIKU_BODY, boom)
        return budget.spent, budget.reserved, budget.in_flight

    assert asyncio.run(scenario()) == (Decimal("0.0125"), Decimal(0), 0)


def test_billed_input_above_the_estimate_raises_later_reservations() -> None:
    async def scenario() -> Decimal:
        budget = Budget(Decimal(1), load_prices())
        estimate = estimate_input_tokens(HAIKU_BODY)

        async def answer() -> dict[str, Any]:
            return {"status": "ok", "cost_usd": 0.001, "input_tokens": estimate * 3}

        await budget.send(HAIKU_BODY, answer)
        return budget.input_ratio

    assert asyncio.run(scenario()) == Decimal(3)


def test_projected_total() -> None:
    assert projected_total(1.0, 10, 100) == 10.0
    assert projected_total(1.0, 0, 100) is None
    assert projected_total(1.0, 10, None) is None
