"""What the API counts toward the limits for one attempt, succeeded or failed.

Policy, not pacing: which tokens of a reply count toward ITPM, and what a failed attempt
still costs. The limiter settles every reservation by these rules, and the engine's sender
reads them to charge the usage it saw; kept apart so the rules read as the table they are.

Only ``input_tokens + cache_creation_input_tokens`` count toward ITPM: cache reads do not,
except on the older ``claude-3*`` models (docs/api-facts.md §7.1; :func:`itpm_tokens`).

A failed attempt is charged by what the API counts (:func:`failed_attempt_usage`):

=====================================  =======  ============  =============
outcome                                request  input tokens  output tokens
=====================================  =======  ============  =============
429 ``rate_limit_error``               no       no            no
other 4xx (refused before it ran)      yes      no            no
5xx / 529 (ran, returned no output)    yes      yes           no
no response, timeout, broken 2xx body  yes      yes           yes (unknown)
=====================================  =======  ============  =============
"""

from __future__ import annotations

from collections.abc import Mapping

from batchrun.core.errors import ApiError

RATE_LIMIT_STATUS = 429

# Older models count cache reads toward ITPM (the ones marked with a dagger in the docs).
_CACHE_READS_COUNT_PREFIXES = ("claude-3",)


def itpm_tokens(usage: Mapping[str, object], model: str) -> int:
    """Input tokens of a reply that count toward ITPM (cache reads only on older models)."""
    total = _int(usage.get("input_tokens")) + _int(usage.get("cache_creation_input_tokens"))
    if model.startswith(_CACHE_READS_COUNT_PREFIXES):
        total += _int(usage.get("cache_read_input_tokens"))
    return total


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def failed_attempt_usage(
    exc: BaseException | None, input_tokens: int, output_tokens: int
) -> tuple[int, int, int]:
    """What the API counts for an attempt that failed: (requests, input, output).

    ``input_tokens``/``output_tokens`` are what was reserved; see the table in the module
    docstring. ``exc`` None (the attempt was abandoned, e.g. cancelled) keeps everything.
    """
    status = exc.status if isinstance(exc, ApiError) else None
    if status == RATE_LIMIT_STATUS:
        return (0, 0, 0)
    if status is not None and 400 <= status < 500:
        return (1, 0, 0)
    if status is not None and status >= 500:
        return (1, input_tokens, 0)
    return (1, input_tokens, output_tokens)
