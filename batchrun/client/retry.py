"""Which failures retry, how long to wait, and the one retry loop (tenacity).

The policy is small pure functions so it can be tested without an event loop:

- ``is_retryable``: connection errors, timeouts, unusable 2xx replies, in-stream server errors,
  408/409/429/5xx/529; ``x-should-retry`` overrides, except for failures that are fatal.
- ``is_fatal``: 401, 402, 403 and a spend-limit 429 make every further request pointless.
- ``wait_seconds``: the server's ``retry-after`` in full (the SDK drops values over 60 s and
  so retries inside the rate-limit window, docs/api-facts.md §5.1), else exponential backoff with a
  30 s cap, because 529 overload windows last minutes (docs/api-facts.md §5.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from batchrun.core.errors import (
    ApiConnectionError,
    ApiError,
    ApiResponseError,
    ApiStatusError,
    ApiTimeoutError,
)

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
NEVER_RETRY_STATUSES = frozenset({400, 401, 403, 404, 413, 422})
# 402 (billing) joins 401/403: no request of this run can succeed until a person acts.
FATAL_STATUSES = frozenset({401, 402, 403})
SPEND_LIMIT_CODE = "enforced_spend_limit_reached"

BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
JITTER = 0.25

# Error types inside a 2xx reply (stream ``error`` events) that say the request itself is
# wrong; anything else there is the server's trouble, including types newer than this code.
_CLIENT_SIDE_TYPES = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "billing_error",
    }
)

# "You have reached your specified API usage limits", "... spend limit ...": a 429 that no
# amount of waiting within a run will clear.
_SPEND_LIMIT_TEXT = re.compile(r"\b(spend|spending|usage)\s+(limit|cap)s?\b", re.IGNORECASE)


def is_fatal(exc: BaseException) -> bool:
    """True when the whole run must stop: bad credentials, no permission, spend limit hit."""
    if not isinstance(exc, ApiError):
        return False
    return exc.status in FATAL_STATUSES or _is_spend_limit(exc)


def _is_spend_limit(exc: ApiError) -> bool:
    if exc.error_code == SPEND_LIMIT_CODE:
        return True
    return exc.status == 429 and bool(_SPEND_LIMIT_TEXT.search(exc.message))


def is_retryable(exc: BaseException) -> bool:
    """True when sending the same request again may succeed."""
    if not isinstance(exc, ApiError) or is_fatal(exc):
        return False
    if exc.status in NEVER_RETRY_STATUSES:
        # The same request would be refused the same way, whatever x-should-retry says.
        return False
    if exc.should_retry is not None:  # the server knows best (x-should-retry)
        return exc.should_retry
    if isinstance(exc, (ApiConnectionError, ApiTimeoutError)):
        return True
    if isinstance(exc, ApiResponseError):
        return exc.error_type not in _CLIENT_SIDE_TYPES
    if isinstance(exc, ApiStatusError) and exc.status is not None:
        return _status_retryable(exc.status)
    return False


def _status_retryable(status: int) -> bool:
    if status in NEVER_RETRY_STATUSES:
        return False
    return status in RETRYABLE_STATUSES or status >= 500


def backoff_seconds(retries_so_far: int, rand: float) -> float:
    """``0.5 * 2**n`` capped at 30 s, shortened by up to 25% so retries do not march in step.

    ``rand`` is in [0, 1); the result lands in (0.75, 1.0] of the capped value.
    """
    exponent = min(max(retries_so_far, 0), 32)  # past the cap anyway; keeps floats small
    return min(BACKOFF_BASE * 2.0**exponent, BACKOFF_CAP) * (1.0 - JITTER * rand)


def wait_seconds(exc: BaseException, retries_so_far: int, rand: float) -> float:
    """The server's ``retry-after`` when it sent one (honoured in full), else backoff."""
    retry_after = exc.retry_after if isinstance(exc, ApiError) else None
    if retry_after is not None and retry_after >= 0:
        return retry_after
    return backoff_seconds(retries_so_far, rand)


async def send_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    on_retry: Callable[[BaseException, float], None] | None = None,
    max_wait: float | None = None,
    give_up: Callable[[BaseException], bool] | None = None,
) -> tuple[T, int]:
    """Await ``call()`` until it succeeds or fails for good; return ``(value, attempts)``.

    ``max_wait`` caps each wait (``--max-retry-wait``), a server's retry-after included.
    ``give_up(exc)`` true stops the retries of a failure the policy would retry: the caller
    knows more (before the API has answered once, a refused connection gets only a few).

    On final failure the last exception is re-raised with ``attempts`` set on it. The first
    attempt runs outside tenacity: most rows succeed at once, and this path runs thousands of
    times a second. A retryable first failure is handed to tenacity as its first outcome, so
    waits, ``on_retry`` calls and attempt counts are exactly those of a pure tenacity loop.

    >>> async def ok() -> str:
    ...     return "done"
    >>> asyncio.run(send_with_retries(ok, max_retries=3))
    ('done', 1)
    """
    try:
        return await call(), 1
    except Exception as exc:
        first_failure = exc
    # ``give_up`` is asked once per failure, by the loop (the first failure included).
    if max_retries <= 0 or not is_retryable(first_failure):
        _stamp_attempts(first_failure, 1)
        raise first_failure
    return await _retry_after(
        first_failure, call, max_retries, sleep, rand, on_retry, max_wait, _retry_predicate(give_up)
    )


def _retry_predicate(
    give_up: Callable[[BaseException], bool] | None,
) -> Callable[[BaseException], bool]:
    if give_up is None:
        return is_retryable
    return lambda exc: is_retryable(exc) and not give_up(exc)


async def _retry_after(
    first_failure: Exception,
    call: Callable[[], Awaitable[T]],
    max_retries: int,
    sleep: Callable[[float], Awaitable[None]],
    rand: Callable[[], float],
    on_retry: Callable[[BaseException, float], None] | None,
    max_wait: float | None = None,
    retryable: Callable[[BaseException], bool] = is_retryable,
) -> tuple[T, int]:
    """The tenacity loop, starting from a first attempt that already failed."""
    attempts = 0
    replay: list[Exception] = [first_failure]

    async def attempt() -> T:
        nonlocal attempts
        attempts += 1
        if replay:
            raise replay.pop()
        return await call()

    def wait(state: RetryCallState) -> float:
        seconds = wait_seconds(_exception_of(state), state.attempt_number - 1, rand())
        return seconds if max_wait is None else min(seconds, max_wait)

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None:
            on_retry(_exception_of(state), state.upcoming_sleep)

    retrying = AsyncRetrying(
        retry=retry_if_exception(retryable),
        stop=stop_after_attempt(max_retries + 1),
        wait=wait,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        value = cast(T, await retrying(attempt))
    except Exception as exc:
        _stamp_attempts(exc, attempts)
        raise
    return value, attempts


def _exception_of(state: RetryCallState) -> BaseException:
    # tenacity calls wait/before_sleep only after a failed attempt, so both are set.
    assert state.outcome is not None
    exc = state.outcome.exception()
    assert exc is not None
    return exc


def _stamp_attempts(exc: BaseException, attempts: int) -> None:
    """Record how many sends the failure took; ApiError has the slot, others get it if they can."""
    with contextlib.suppress(AttributeError, TypeError):
        exc.attempts = attempts  # type: ignore[attr-defined]
