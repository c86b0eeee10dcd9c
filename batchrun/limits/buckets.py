"""The token bucket: a budget refilled continuously at a fixed rate, up to a capacity.

The API's limits are token buckets (docs/api-facts.md §7.1), so the limiter keeps one per model and
dimension. The bucket is plain arithmetic on a time the caller passes in (``now``): it owns no
clock, waits for nothing and knows nothing of requests, which keeps the refill rules small
enough to test on their own and leaves every policy decision to ``limiter``.
"""

from __future__ import annotations

from batchrun.limits.values import WINDOW_S


class Bucket:
    """A token bucket refilled continuously at ``rate`` per second up to ``capacity``.

    The level may go below zero: a reply that used more than was reserved is a debt that the
    refill pays off before anyone else is admitted.
    """

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(
        self, capacity: float, rate: float, now: float, level: float | None = None
    ) -> None:
        self.capacity = capacity
        self.rate = rate
        self.level = capacity if level is None else min(level, capacity)
        self.updated = now

    @classmethod
    def per_minute(cls, limit: float, now: float, level: float | None = None) -> Bucket:
        """The API's bucket: a minute's budget, refilled in a minute."""
        return cls(limit, limit / WINDOW_S, now, level)

    def refill(self, now: float) -> float:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now
        return self.level

    def delay(self, amount: float, now: float, margin: float = 0.0) -> float:
        """Seconds until the bucket holds ``amount`` plus the margin (0 if it does now).

        The margin shrinks for requests near the capacity, so any request that fits in a
        full bucket is admitted eventually.
        """
        keep = min(margin, max(self.capacity - amount, 0.0))
        short = amount + keep - self.refill(now)
        return short / self.rate if short > 0 else 0.0

    def take(self, amount: float, now: float) -> None:
        self.refill(now)
        self.level -= amount

    def give(self, amount: float, now: float) -> None:
        """Return ``amount`` (negative: take more), never above the capacity."""
        self.refill(now)
        self.level = min(self.capacity, self.level + amount)

    def lower_to(self, level: float, now: float) -> None:
        self.refill(now)
        self.level = min(self.level, level)

    def resize_per_minute(self, limit: float, now: float) -> None:
        self.refill(now)
        self.capacity = limit
        self.rate = limit / WINDOW_S
        self.level = min(self.level, limit)
