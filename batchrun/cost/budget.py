"""The ``--max-cost`` budget: never send a request that could take spending past the cap.

Before a request is sent its worst case is reserved: its input (estimated, with a margin, at
the dearest input rate the request could be billed at) plus all of ``max_tokens`` at the
output price. When the answer arrives the reservation is settled with the real cost from
its usage. So at every moment ``spent + reserved <= limit``, and the cap holds even with
hundreds of requests in flight.

When the next request does not fit, the budget first waits for requests in flight to settle
(their reservations are usually far above their real cost, and settling frees the
difference); only when nothing is in flight and it still does not fit is the run stopped.
That is why a stopped run has spent within one request's worst case of the limit, not within
``concurrency`` of them.

The input margin starts at ``INPUT_MARGIN`` (the local estimate runs about a quarter low
against Claude's tokenizer) and rises to the largest billed/estimated ratio seen, so a
tokenizer that counts more (Opus 4.7's) cannot slip past the cap. The cap is the job's, not
one run's: ``spent_before`` is what earlier runs of the job spent (kept with its output,
``store.spend``), and a run may spend only what it leaves. A job that has spent its cap
sends nothing until the cap is raised.

    budget = Budget(Decimal("5.00"), load_prices(), on_stop=lambda why: pool.stop_admitting())
    row = await budget.send(body, lambda: sender.send(work, body))
    if row is None:
        ...  # not sent: the budget is spent; a re-run resumes from this row

Many workers, one budget: given a ``store`` (a :class:`SpendingStore`, e.g. the
``limits.shared.SharedBudget`` of ``--rate-limit-store``), reserving and settling happen there,
atomically, against what every worker of the job spent and holds reserved, so together they
stop at the cap. This budget's own ``spent`` / ``reserved`` still count this worker's part.
A request that does not fit waits while any worker's requests in flight could free enough
(looking again every ``SHARED_POLL_S``: other workers' settling does not wake this one) and
stops the run only when the job's settled spending alone leaves no room. If the store goes
away, the budget carries on locally with the worker's share (``SpendingStore.share``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any, Protocol

from batchrun.core.wording import option
from batchrun.cost.models import local_input_tokens
from batchrun.cost.prices import PER_MILLION, PriceTable, did_you_mean

Row = dict[str, Any]

# The local input estimate runs about a quarter low against Claude's tokenizer (rows.tokens), so
# reservations start at this multiple of it; settling gives the excess back.
INPUT_MARGIN = Decimal("1.5")

SHARED_POLL_S = 0.5
"""With a shared store, how often a request that does not fit looks again at the budget."""


class SpendingStore(Protocol):
    """Where the spending of a budget shared by many workers is kept; each call is atomic."""

    def reserve(self, amount: Decimal, limit: Decimal) -> tuple[bool, Decimal, Decimal] | None:
        """Reserve ``amount`` if every worker's spent + reserved + it stays within ``limit``:
        (reserved?, spent by all, reserved by all) after; None when the store is gone."""
        ...

    def settle(self, reserved: Decimal, actual: Decimal, limit: Decimal) -> bool:
        """Replace a reservation by the real cost; False when the store is gone."""
        ...

    def share(self, limit: Decimal) -> Decimal:
        """How much more this worker may reserve on its own, now that the store is gone."""
        ...


class Budget:
    """A job's spending cap in USD: reserve worst cases, settle real costs."""

    def __init__(
        self,
        limit: Decimal,
        prices: PriceTable,
        on_stop: Callable[[str], None] = lambda reason: None,
        *,
        store: SpendingStore | None = None,
        spent_before: Decimal = Decimal(0),
    ) -> None:
        if limit < 0:
            raise ValueError("the budget must be >= 0")
        self.limit = limit
        # What earlier runs of the job spent. With a store, the store counts it (each worker
        # adds its output's share there), and this stays 0.
        self.before = spent_before
        self.prices = prices
        self.on_stop = on_stop  # the runner stops admitting rows and tells the user
        # Billed / estimated input seen so far, at least INPUT_MARGIN: reservations use it.
        self.input_ratio = INPUT_MARGIN
        self.spent = Decimal(0)  # settled: the real cost of answered requests
        self.reserved = Decimal(0)  # worst cases of requests admitted and not yet settled
        self.in_flight = 0
        self.stop_reason: str | None = None
        self.refused: Decimal | None = None  # the worst case of the request that did not fit
        self._changed = asyncio.Condition()
        self._store = store
        # What this worker may hold (spent + reserved) on its own: the limit, or once a shared
        # store has gone away, what it held then plus its share of what was left.
        self._cap = limit

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    def worst_case(self, body: Mapping[str, Any], input_tokens: int) -> Decimal | None:
        """The most ``body`` could cost, or None when its model has no price.

        ``input_tokens`` is the local estimate; a request that marks anything for caching may
        be billed its input as 1 h cache writes, the dearest input rate, so that rate is used.
        """
        price = self.prices.lookup(body.get("model"))
        if price is None:
            return None
        tokens = math.ceil(input_tokens * self.input_ratio)
        rates = price.rates_for(tokens)
        input_rate = rates.input
        if _uses_cache(body):
            input_rate = max(rates.input, rates.cache_write_5m, rates.cache_write_1h)
        max_tokens = int(body.get("max_tokens") or 0)
        return (tokens * input_rate + max_tokens * rates.output) / PER_MILLION

    async def admit(self, worst: Decimal | None, model: str | None = None) -> bool:
        """Reserve ``worst`` and return True, or return False: the request must not be sent.

        Waits while requests in flight may still free enough; False once the budget has
        stopped (this or an earlier request did not fit, or had no price).
        """
        async with self._changed:
            while True:
                if self.stop_reason is not None:
                    return False
                if worst is None:
                    self._stop(no_price_stop(model, self.prices))
                    return False
                if self._store is not None:
                    if await self._admit_shared(self._store, worst):
                        return True
                    if self._store is not None or self.stop_reason is not None:
                        continue
                if self.before + self.spent + self.reserved + worst <= self._cap:
                    self._hold(worst)
                    return True
                if self.in_flight == 0:
                    self.refused = worst
                    self._stop(self._no_room(worst))
                    return False
                await self._changed.wait()

    def _no_room(self, worst: Decimal) -> str:
        """Why the next request may not go (nothing is in flight to free room)."""
        if self.before >= self._cap and not self.spent:
            return (
                f"the job has already spent ${self.before:.4f} of its ${self.limit} budget in "
                "earlier runs"
            )
        left = max(self._cap - self.before - self.spent, Decimal(0))
        earlier = f", ${self.before:.4f} of it spent by earlier runs" if self.before else ""
        return (
            f"the next request could cost up to ${worst:.4f} and only ${left:.4f} of the "
            f"job's ${self.limit} budget is left{earlier}"
        )

    async def _admit_shared(self, store: SpendingStore, worst: Decimal) -> bool:
        """One look at the shared budget (the condition's lock held): True when reserved.

        False after waiting (a request in flight anywhere may free enough), after stopping the
        run, or when the store is gone (the caller goes on with the local share).
        """
        answer = store.reserve(worst, self.limit)
        if answer is None:
            self._go_local(store)
            return False
        taken, spent_by_all, reserved_by_all = answer
        if taken:
            self._hold(worst)
            return True
        if reserved_by_all <= 0 or spent_by_all + worst > self.limit:
            # Even if every request in flight cost nothing, this one would not fit.
            self.refused = worst
            self._stop(
                f"the next request could cost up to ${worst:.4f} and only "
                f"${max(self.limit - spent_by_all, Decimal(0)):.4f} of the ${self.limit} "
                f"budget shared by the job's workers through {option('rate_limit_store')} is "
                f"left (it counts their re-runs too: raise {option('max_cost')} to spend more)"
            )
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), SHARED_POLL_S)
        return False

    def _hold(self, worst: Decimal) -> None:
        self.reserved += worst
        self.in_flight += 1

    def _go_local(self, store: SpendingStore) -> None:
        """The shared store is gone (it warned): keep to this worker's share from now on."""
        self._cap = self.spent + self.reserved + store.share(self.limit)
        self._store = None

    def _stop(self, reason: str) -> None:
        self.stop_reason = reason
        self._changed.notify_all()
        self.on_stop(reason)

    async def send(self, body: Mapping[str, Any], send: Callable[[], Awaitable[Row]]) -> Row | None:
        """``send()`` within the budget: its row, or None when it was not sent (budget spent).

        The reservation is settled with the row's ``cost_usd`` (an error row costs nothing:
        failed attempts are not billed) even if ``send`` raises.
        """
        estimate = local_input_tokens(body, self.prices)
        worst = self.worst_case(body, estimate)
        if not await self.admit(worst, body.get("model")):
            return None
        assert worst is not None
        actual = Decimal(0)
        try:
            row = await send()
            cost = row.get("cost_usd")
            actual = Decimal(repr(cost)) if cost else Decimal(0)
            self._learn(estimate, row)
            return row
        finally:
            await self.settle(worst, actual)

    def _learn(self, estimate: int, row: Mapping[str, Any]) -> None:
        billed = sum(
            row.get(name) or 0
            for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        if billed and estimate:
            self.input_ratio = max(self.input_ratio, Decimal(billed) / Decimal(estimate))

    async def settle(self, worst: Decimal, actual: Decimal) -> None:
        """Replace an admitted request's reservation by what it really cost."""
        async with self._changed:
            self.reserved -= worst
            self.in_flight -= 1
            self.spent += actual
            store = self._store
            if store is not None and not store.settle(worst, actual, self.limit):
                self._go_local(store)
            self._changed.notify_all()


# The start of the stop reason for a model without a price: a re-run stops at the same row,
# so callers must not offer "re-run to resume" after it (``is_price_stop``).
NO_PRICE_STOP = "no price for model"


def no_price_stop(model: str | None, prices: PriceTable) -> str:
    """Why the budget stopped at a model it cannot price, and the two ways out."""
    return (
        f"{NO_PRICE_STOP} {model!r}{did_you_mean(model, prices)}, so the budget cannot bound "
        f"its cost. Fix the model name or add a price with {option('prices', 'FILE')}, then "
        "run again: a re-run as it is stops at the same row"
    )


def is_price_stop(reason: str | None) -> bool:
    """True when the budget stopped for a missing price (re-running alone cannot help)."""
    return reason is not None and reason.startswith(NO_PRICE_STOP)


def projected_total(spent: float, done: int, total: int | None) -> float | None:
    """Spending at the end of the run if the rows left cost what the rows so far did."""
    if not done or total is None:
        return None
    return spent / done * max(total, done)


def _uses_cache(body: Mapping[str, Any]) -> bool:
    """True when any part of the request carries ``cache_control``."""
    if "cache_control" in body:
        return True
    parts = [body.get("system"), body.get("tools"), body.get("messages")]
    return '"cache_control"' in json.dumps(parts, default=str)
