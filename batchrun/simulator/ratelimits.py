"""The simulator's rate limits: RPM / ITPM / OTPM token buckets like the API's, and their headers.

What the API documents (docs/api-facts.md §7.1-7.2), done the same way here:

* each limit is a bucket holding one minute's budget, refilled continuously (limit / 60 per
  second), per model;
* a request takes 1 from the request bucket and its input tokens from the ITPM bucket when it
  arrives, and its ``max_tokens`` from the OTPM bucket; when the answer is made the OTPM
  bucket gets back ``max_tokens - output_tokens`` (the API estimates output from
  ``max_tokens`` at the start and corrects it at the end);
* a request that finds any bucket short is refused with 429 ``rate_limit_error`` and a
  ``retry-after`` in whole seconds (at least 1): the time until every short bucket holds
  enough. A refused request takes nothing;
* every response to a checked request carries ``anthropic-ratelimit-{requests,input-tokens,
  output-tokens}-{limit,remaining,reset}`` for the limits that are set: ``remaining`` rounded
  down, ``reset`` (RFC 3339, whole seconds, rounded up) the moment the bucket will be full.

This is deliberately separate code from the client's ``batchrun.limits``: a stand-in that
shared the client's arithmetic could not catch the client's mistakes.

    >>> limits = RateLimits(SimLimits(rpm=60), clock=lambda: 0.0, wall_clock=lambda: 0.0)
    >>> admission = limits.admit("claude-haiku-4-5", 12, 100)
    >>> limits.headers("claude-haiku-4-5")["anthropic-ratelimit-requests-remaining"]
    '59'
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

REQUESTS, INPUT, OUTPUT = 0, 1, 2
DIMENSIONS = ("requests", "input_tokens", "output_tokens")
"""Names of the three buckets, as counted in ``SimulatorStats.rate_limited_by``."""

_HEADER_NAMES = ("requests", "input-tokens", "output-tokens")
_UNITS = ("requests", "input tokens", "output tokens")
WINDOW_S = 60.0


@dataclass(frozen=True)
class SimLimits:
    """Requests, input tokens and output tokens per minute the simulator allows; None: no limit."""

    rpm: int | None = None
    itpm: int | None = None
    otpm: int | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "itpm", "otpm"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1 or None, got {value!r}")

    def values(self) -> tuple[int | None, int | None, int | None]:
        return (self.rpm, self.itpm, self.otpm)

    @property
    def any(self) -> bool:
        return any(v is not None for v in self.values())


class _Bucket:
    """A minute's budget, refilled continuously; the level never goes below what was taken."""

    def __init__(self, limit: int, now: float) -> None:
        self.limit = limit
        self.rate = limit / WINDOW_S
        self.level = float(limit)
        self.updated = now

    def refill(self, now: float) -> float:
        if now > self.updated:
            self.level = min(float(self.limit), self.level + (now - self.updated) * self.rate)
            self.updated = now
        return self.level

    def shortfall_seconds(self, amount: float, now: float) -> float:
        short = amount - self.refill(now)
        return short / self.rate if short > 0 else 0.0


@dataclass
class Admission:
    """What one admitted request took, so its output can be corrected when it ends."""

    model: str
    input_tokens: int
    max_tokens: int
    open: bool = True


@dataclass(frozen=True)
class Refusal:
    """A request some bucket cannot take now: 429 with ``retry_after`` whole seconds."""

    dimension: str
    retry_after: int
    message: str


class RateLimits:
    """The simulator's buckets, one set per model; used from its event loop only.

    ``clock`` (monotonic seconds) refills the buckets and ``wall_clock`` (epoch seconds) dates
    the ``-reset`` headers; both are the real clocks unless a test passes fakes.
    """

    def __init__(
        self,
        limits: SimLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._wall = wall_clock
        self._buckets: dict[str, list[_Bucket | None]] = {}

    def admit(self, model: str, input_tokens: int, max_tokens: int) -> Admission | Refusal:
        """Take the request's share of every bucket, or refuse it and take nothing."""
        buckets = self._for(model)
        now = self._clock()
        need = (1, input_tokens, max_tokens)
        worst: tuple[float, int] | None = None
        for dim, bucket in enumerate(buckets):
            if bucket is None:
                continue
            wait = self._wait(bucket, need[dim], now)
            if wait > 0 and (worst is None or wait > worst[0]):
                worst = (wait, dim)
        if worst is not None:
            return self._refusal(model, worst[1], worst[0])
        for dim, bucket in enumerate(buckets):
            if bucket is not None:
                bucket.level -= need[dim]
        return Admission(model, input_tokens, max_tokens)

    @staticmethod
    def _wait(bucket: _Bucket, amount: int, now: float) -> float:
        if amount > bucket.limit:
            return WINDOW_S  # never fits; the API keeps saying "wait a minute"
        return bucket.shortfall_seconds(amount, now)

    def _refusal(self, model: str, dim: int, wait: float) -> Refusal:
        limit = self.limits.values()[dim]
        message = (
            f"This request would exceed the rate limit for your organization of {limit:,} "
            f"{_UNITS[dim]} per minute for {model}. Please reduce the prompt length or the "
            "maximum tokens requested, or try again later."
        )
        return Refusal(DIMENSIONS[dim], max(1, math.ceil(wait)), message)

    def finish(self, admission: Admission, output_tokens: int) -> None:
        """The answer is made: give back the output reservation it did not use."""
        self._give_back(admission, max(admission.max_tokens - output_tokens, 0))

    def release(self, admission: Admission) -> None:
        """The request ended with an error status and no output: give back its reservation."""
        self._give_back(admission, admission.max_tokens)

    def cancel(self, admission: Admission) -> None:
        """A request answered 429 after all (an injected fault): give back everything."""
        if not admission.open:
            return
        buckets = self._for(admission.model)
        now = self._clock()
        for bucket, amount in zip(buckets, (1, admission.input_tokens), strict=False):
            if bucket is not None:
                bucket.refill(now)
                bucket.level = min(float(bucket.limit), bucket.level + amount)
        self._give_back(admission, admission.max_tokens)

    def _give_back(self, admission: Admission, tokens: int) -> None:
        if not admission.open:
            return
        admission.open = False
        bucket = self._for(admission.model)[OUTPUT]
        if bucket is not None:
            bucket.refill(self._clock())
            bucket.level = min(float(bucket.limit), bucket.level + tokens)

    def headers(self, model: str) -> dict[str, str]:
        """``anthropic-ratelimit-*`` headers for ``model`` as its buckets stand now."""
        now, wall = self._clock(), self._wall()
        headers: dict[str, str] = {}
        for name, bucket in zip(_HEADER_NAMES, self._for(model), strict=True):
            if bucket is None:
                continue
            level = bucket.refill(now)
            full_in = max(bucket.limit - level, 0.0) / bucket.rate
            prefix = f"anthropic-ratelimit-{name}-"
            headers[prefix + "limit"] = str(bucket.limit)
            headers[prefix + "remaining"] = str(max(math.floor(level), 0))
            headers[prefix + "reset"] = rfc3339(math.ceil(wall + full_in))
        return headers

    def _for(self, model: str) -> list[_Bucket | None]:
        buckets = self._buckets.get(model)
        if buckets is None:
            now = self._clock()
            buckets = [None if v is None else _Bucket(v, now) for v in self.limits.values()]
            self._buckets[model] = buckets
        return buckets


def rfc3339(epoch_seconds: float) -> str:
    """``2025-08-21T12:40:59Z``: the format of the API's ``-reset`` headers."""
    moment = datetime.fromtimestamp(epoch_seconds, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
