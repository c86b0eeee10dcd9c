"""retry.py: the policy as pure functions, then the loop with a fake sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from batchrun.client.retry import (
    BACKOFF_CAP,
    backoff_seconds,
    is_fatal,
    is_retryable,
    send_with_retries,
    wait_seconds,
)
from batchrun.core.errors import (
    ApiConnectionError,
    ApiError,
    ApiResponseError,
    ApiStatusError,
    ApiTimeoutError,
    ConfigError,
)


def status_error(status: int, **kwargs: Any) -> ApiStatusError:
    kwargs.setdefault("message", f"HTTP {status}")
    return ApiStatusError(status=status, **kwargs)


# --- is_retryable / is_fatal -----------------------------------------------------------------

RETRY_STATUSES = [408, 409, 429, 500, 502, 503, 504, 529, 520, 599]
NO_RETRY_STATUSES = [400, 401, 402, 403, 404, 405, 413, 422, 451]


@pytest.mark.parametrize("status", RETRY_STATUSES)
def test_retryable_statuses(status: int) -> None:
    assert is_retryable(status_error(status))


@pytest.mark.parametrize("status", NO_RETRY_STATUSES)
def test_non_retryable_statuses(status: int) -> None:
    assert not is_retryable(status_error(status))


def test_connection_and_timeout_errors_retry() -> None:
    assert is_retryable(ApiConnectionError("reset", error_type="connection_error"))
    assert is_retryable(ApiTimeoutError("slow", error_type="timeout"))


@pytest.mark.parametrize(
    ("error_type", "retry"),
    [
        ("malformed_response", True),
        ("stream_interrupted", True),
        ("overloaded_error", True),
        ("api_error", True),
        ("rate_limit_error", True),
        ("some_future_server_error", True),
        ("invalid_request_error", False),
        ("authentication_error", False),
    ],
)
def test_response_errors_by_type(error_type: str, retry: bool) -> None:
    assert is_retryable(ApiResponseError("x", status=200, error_type=error_type)) is retry


def test_foreign_exceptions_never_retry() -> None:
    assert not is_retryable(ValueError("bug"))
    assert not is_retryable(ConfigError("bad"))
    assert not is_retryable(asyncio.CancelledError())


def test_should_retry_header_overrides_status() -> None:
    assert not is_retryable(status_error(529, should_retry=False))
    assert not is_retryable(status_error(500, should_retry=False))
    assert is_retryable(status_error(418, should_retry=True))


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_requests_the_api_rejected_are_never_retried_whatever_the_header(status: int) -> None:
    # The same body would be refused the same way: retrying only spends time and quota.
    assert not is_retryable(status_error(status, should_retry=True))


@pytest.mark.parametrize("status", [401, 402, 403])
def test_auth_failures_are_fatal_even_if_server_says_retry(status: int) -> None:
    error = status_error(status, should_retry=True)
    assert is_fatal(error)
    assert not is_retryable(error)


@pytest.mark.parametrize(
    "error",
    [
        status_error(429, error_code="enforced_spend_limit_reached", should_retry=True),
        status_error(429, message="You have reached your specified API usage limits."),
        status_error(429, message="Your workspace has hit its spend limit for this month"),
    ],
)
def test_spend_limit_429_is_fatal_never_retried(error: ApiStatusError) -> None:
    assert is_fatal(error)
    assert not is_retryable(error)


def test_ordinary_rate_limit_429_is_not_fatal() -> None:
    error = status_error(
        429, message="Number of request tokens has exceeded your per-minute rate limit"
    )
    assert not is_fatal(error)
    assert is_retryable(error)


@pytest.mark.parametrize("status", [400, 404, 408, 429, 500, 529])
def test_other_statuses_are_not_fatal(status: int) -> None:
    assert not is_fatal(status_error(status))
    assert not is_fatal(ApiConnectionError("x"))
    assert not is_fatal(KeyError("x"))


# --- backoff / wait --------------------------------------------------------------------------


def test_backoff_sequence_without_jitter() -> None:
    waits = [backoff_seconds(n, 0.0) for n in range(9)]
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_backoff_cap_holds_for_huge_retry_counts() -> None:
    assert backoff_seconds(10_000, 0.0) == BACKOFF_CAP == 30.0


@pytest.mark.parametrize("n", [0, 1, 3, 6, 20])
@pytest.mark.parametrize("rand", [0.0, 0.3, 0.999999])
def test_backoff_jitter_shortens_by_at_most_a_quarter(n: int, rand: float) -> None:
    full = backoff_seconds(n, 0.0)
    wait = backoff_seconds(n, rand)
    assert 0.75 * full < wait <= full
    assert wait == pytest.approx(full * (1 - 0.25 * rand))


def test_wait_honours_retry_after_in_full() -> None:
    error = status_error(429, retry_after=120.0)
    assert wait_seconds(error, 0, 0.5) == 120.0
    assert wait_seconds(status_error(529, retry_after=0.0), 3, 0.5) == 0.0


def test_wait_falls_back_to_backoff() -> None:
    assert wait_seconds(status_error(529), 2, 0.0) == 2.0
    assert wait_seconds(ApiConnectionError("x"), 0, 0.0) == 0.5
    assert wait_seconds(RuntimeError("x"), 1, 0.0) == 1.0


# --- send_with_retries -----------------------------------------------------------------------


class Script:
    """A call that fails with the given exceptions in order, then returns "ok"."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


class FakeSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def run(call: Callable[[], Awaitable[str]], *, max_retries: int, **kwargs: Any) -> tuple[str, int]:
    kwargs.setdefault("rand", lambda: 0.0)
    return asyncio.run(send_with_retries(call, max_retries=max_retries, **kwargs))


def test_success_first_time() -> None:
    sleep = FakeSleep()
    assert run(Script(), max_retries=3, sleep=sleep) == ("ok", 1)
    assert sleep.waits == []


def test_succeeds_after_n_failures() -> None:
    script = Script(status_error(529), ApiConnectionError("reset"), status_error(500))
    sleep = FakeSleep()
    assert run(script, max_retries=5, sleep=sleep) == ("ok", 4)
    assert script.calls == 4
    assert sleep.waits == [0.5, 1.0, 2.0]


def test_retry_after_used_between_attempts() -> None:
    script = Script(status_error(429, retry_after=120.0), status_error(529))
    sleep = FakeSleep()
    assert run(script, max_retries=2, sleep=sleep) == ("ok", 3)
    assert sleep.waits == [120.0, 1.0]


def test_stops_after_max_retries_plus_one() -> None:
    failures = [status_error(529, message=f"overloaded #{i}") for i in range(10)]
    script = Script(*failures)
    sleep = FakeSleep()
    with pytest.raises(ApiStatusError) as info:
        run(script, max_retries=3, sleep=sleep)
    assert script.calls == 4
    assert info.value.attempts == 4
    assert info.value.message == "overloaded #3"  # the last one
    assert sleep.waits == [0.5, 1.0, 2.0]


def test_non_retryable_raises_at_once() -> None:
    script = Script(status_error(400))
    sleep = FakeSleep()
    with pytest.raises(ApiStatusError) as info:
        run(script, max_retries=5, sleep=sleep)
    assert info.value.attempts == 1
    assert script.calls == 1
    assert sleep.waits == []


def test_non_retryable_after_retries_keeps_count() -> None:
    script = Script(status_error(503), status_error(401))
    with pytest.raises(ApiStatusError) as info:
        run(script, max_retries=5, sleep=FakeSleep())
    assert info.value.status == 401
    assert info.value.attempts == 2


def test_max_retries_zero_means_one_attempt() -> None:
    script = Script(status_error(529))
    with pytest.raises(ApiError) as info:
        run(script, max_retries=0, sleep=FakeSleep())
    assert info.value.attempts == 1


def test_foreign_exception_propagates_unretried() -> None:
    script = Script(KeyError("bug"))
    with pytest.raises(KeyError):
        run(script, max_retries=3, sleep=FakeSleep())
    assert script.calls == 1


def test_on_retry_called_before_each_sleep() -> None:
    first, second = status_error(529), ApiTimeoutError("slow", error_type="timeout")
    seen: list[tuple[BaseException, float]] = []
    sleep = FakeSleep()
    result = run(
        Script(first, second),
        max_retries=3,
        sleep=sleep,
        rand=lambda: 1.0,
        on_retry=lambda exc, wait: seen.append((exc, wait)),
    )
    assert result == ("ok", 3)
    assert seen == [(first, 0.375), (second, 0.75)]
    assert sleep.waits == [0.375, 0.75]


def test_give_up_stops_retries_the_policy_would_make() -> None:
    refused = [ApiConnectionError("refused") for _ in range(5)]
    seen: list[BaseException] = []

    def give_up(exc: BaseException) -> bool:
        seen.append(exc)
        return len(seen) >= 2  # the caller allows one retry of these, say

    script, sleep = Script(*refused), FakeSleep()
    with pytest.raises(ApiConnectionError) as info:
        run(script, max_retries=8, sleep=sleep, give_up=give_up)
    assert script.calls == 2 and info.value.attempts == 2 and len(sleep.waits) == 1


def test_give_up_is_not_asked_of_what_the_policy_refuses_anyway() -> None:
    asked: list[BaseException] = []
    with pytest.raises(ApiStatusError):
        run(Script(status_error(400)), max_retries=8, give_up=lambda e: bool(asked.append(e)))
    assert asked == []
