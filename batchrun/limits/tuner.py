"""``--concurrency auto``: how many requests to keep in flight, from the limits and latency.

Little's law, in-flight = rate x latency, with the rate the limits allow at the average usage
seen so far (``RateLimiter.request_rate``) and the latency observed. The limiter decides *when*
one request may go; this decides *how many* may be on their way, and only reads the limiter,
so it is its own module.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from batchrun.limits.limiter import RateLimiter, smoothed
from batchrun.limits.values import AUTO_MAX

AUTO_START = 8
"""In-flight requests of ``--concurrency auto`` before any reply has shown limits and latency."""

AUTO_UNLIMITED = 64
"""What ``--concurrency auto`` chooses for a model whose replies show no rate limits."""

AUTO_HEADROOM = 1.5
"""Slots over Little's law, for latency that varies from request to request."""


def little_concurrency(
    rate_per_s: float,
    latency_s: float,
    *,
    headroom: float = AUTO_HEADROOM,
    cap: int = AUTO_MAX,
) -> int:
    """In-flight requests that sustain ``rate_per_s`` at ``latency_s`` each (Little's law).

    >>> little_concurrency(50.0, 2.0)  # 50 req/s x 2 s = 100 in flight, x 1.5 headroom
    150
    """
    if rate_per_s <= 0 or latency_s <= 0:
        return 1
    needed = rate_per_s * latency_s * headroom
    return max(1, min(cap, math.ceil(needed - 1e-9)))  # float noise must not add a slot


class ConcurrencyTuner:
    """``--concurrency auto``: sets the pool's in-flight limit from limits and latency.

    Starts at ``start`` (a few requests, until replies show the limits and the latency), then
    after every reply: sum over models of ``little_concurrency(rate, latency)``, where the rate
    is what that model's limits allow at its average usage (``RateLimiter.request_rate``) and
    the latency a moving average of its replies'. Small changes (under 10 %) are ignored so
    the pool is not resized on every reply.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        apply: Callable[[int], None],
        *,
        start: int = AUTO_START,
        cap: int = AUTO_MAX,
        unlimited: int = AUTO_UNLIMITED,
    ) -> None:
        self._limiter = limiter
        self._apply = apply
        self._cap = cap
        self._unlimited = min(unlimited, cap)
        self._latency: dict[str, float] = {}
        self.chosen = max(1, min(start, cap))
        self.highest = self.chosen
        apply(self.chosen)

    def observe(self, model: str, latency_s: float) -> None:
        """A reply from ``model`` took ``latency_s``; re-choose the concurrency."""
        self._latency[model] = smoothed(self._latency.get(model), max(latency_s, 0.0))
        target = self.target()
        if abs(target - self.chosen) >= max(1.0, 0.1 * self.chosen):
            self.chosen = target
            self.highest = max(self.highest, target)
            self._apply(target)

    def target(self) -> int:
        total = 0
        for model, latency in self._latency.items():
            rate = self._limiter.request_rate(model)
            if rate is None:
                total += self._unlimited
            else:
                total += little_concurrency(rate, latency, cap=self._cap)
        return max(1, min(self._cap, total))
