"""Reading the API's rate-limit headers: ``anthropic-ratelimit-{requests,input-tokens,
output-tokens}-{limit,remaining,reset}``.

Every response carries them (docs/api-facts.md §7.2), and the limiter learns limits and remaining
budgets from them (``RateLimiter.observe``). Parsing is its own job, kept apart from the
limiter's arithmetic: it is all about odd header values (missing, fractional, negative, not
a number), which must never stop a run, and the tests read headers without any limiter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from batchrun.core.timestamps import parse_rfc3339_or_none

HEADER_NAMES = ("requests", "input-tokens", "output-tokens")
"""The dimension's part of ``anthropic-ratelimit-<name>-{limit,remaining,reset}``, in the
order of ``values.REQUESTS``, ``INPUT``, ``OUTPUT``."""


@dataclass(frozen=True)
class HeaderReading:
    """One dimension's ``-limit``, ``-remaining`` and ``-reset`` headers, as sent.

    ``reset`` stays text until asked for (``reset_at``): pacing does not need it, and parsing
    three timestamps per response would cost more than all the rest.
    """

    limit: int | None
    remaining: int | None
    reset: str | None = None

    @property
    def reset_at(self) -> float | None:
        """Epoch seconds when the bucket will be full again, if the header said."""
        moment = parse_rfc3339_or_none(self.reset)
        return None if moment is None else moment.timestamp()


def parse_rate_limit_headers(headers: Mapping[str, str]) -> dict[int, HeaderReading]:
    """The ``anthropic-ratelimit-*`` readings of a response, by dimension index; {} if none.

    >>> parse_rate_limit_headers({"anthropic-ratelimit-requests-limit": "50",
    ...                           "anthropic-ratelimit-requests-remaining": "49"})
    {0: HeaderReading(limit=50, remaining=49, reset=None)}
    """
    # Once per response, with every response's dozen headers: one lower() per name, and a
    # reading made only for a dimension that has a header.
    found: dict[str, str] = {}
    for key, value in headers.items():
        name = key.lower()
        if name.startswith(_PREFIX):
            found[name] = value
    if not found:
        return {}
    readings: dict[int, HeaderReading] = {}
    for dim, (limit_name, remaining_name, reset_name) in enumerate(_NAMES):
        limit, remaining = _count(found.get(limit_name)), _count(found.get(remaining_name))
        reset = found.get(reset_name)
        if limit is not None or remaining is not None or reset is not None:
            readings[dim] = HeaderReading(limit, remaining, reset)
    return readings


_PREFIX = "anthropic-ratelimit-"
_NAMES = tuple(
    (f"{_PREFIX}{name}-limit", f"{_PREFIX}{name}-remaining", f"{_PREFIX}{name}-reset")
    for name in HEADER_NAMES
)


def _count(text: str | None) -> int | None:
    """A non-negative whole number from a header value, or None if it is not one."""
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return int(value)
