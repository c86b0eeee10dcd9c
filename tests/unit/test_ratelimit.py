"""Rate-limit admission with a virtual clock: buckets, learned limits, 429 pauses, auto concurrency.

Nothing here sleeps: ``VirtualTime`` is the limiter's clock and sleep, and time only moves
when every task is blocked on one of its sleeps (then to the earliest wake-up).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

import pytest

from batchrun.core.errors import ApiConnectionError, ApiStatusError, ExceedsRateLimitError
from batchrun.core.timestamps import parse_rfc3339
from batchrun.limits.buckets import Bucket
from batchrun.limits.congestion import Verdict
from batchrun.limits.headers import HeaderReading, parse_rate_limit_headers
from batchrun.limits.limiter import RESUME_RAMP_S, RateLimiter, Reservation
from batchrun.limits.tuner import AUTO_START, ConcurrencyTuner, little_concurrency
from batchrun.limits.usage import failed_attempt_usage, itpm_tokens
from batchrun.limits.values import INPUT, OUTPUT, REQUESTS, Limits, LimitsConfig

T = TypeVar("T")
MODEL = "claude-haiku-4-5"


class VirtualTime:
    """A fake clock whose sleeps end in time order when the test lets time run."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), next(self._order), future))
        await future

    async def idle(self) -> None:
        """Let every runnable task run until all are blocked."""
        for _ in range(50):
            await asyncio.sleep(0)

    async def step(self) -> bool:
        """Wake the earliest sleeper (moving the clock to it); False when nobody sleeps."""
        while self._sleepers:
            wake_at, _, future = heapq.heappop(self._sleepers)
            if future.done():  # cancelled
                continue
            self.now = max(self.now, wake_at)
            future.set_result(None)
            await self.idle()
            return True
        return False

    async def run_until(self, moment: float) -> None:
        """Let time pass up to ``moment``."""
        await self.idle()
        while self._sleepers and min(s[0] for s in self._sleepers if not s[2].done()) <= moment:
            await self.step()
        self.now = max(self.now, moment)
        await self.idle()

    async def finish(self, *aws: Awaitable[T]) -> list[T]:
        """Run ``aws`` to the end, letting time pass as needed."""
        tasks = [asyncio.ensure_future(a) for a in aws]
        await self.idle()
        while not all(t.done() for t in tasks):
            if not await self.step():
                raise AssertionError("deadlock: tasks wait but nothing sleeps")
        return [t.result() for t in tasks]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def limiter(vt: VirtualTime, margin: float = 0.0, **limits: int) -> RateLimiter:
    return RateLimiter(
        LimitsConfig(Limits(**limits)),
        clock=vt,
        sleep=vt.sleep,
        pause_sleep=vt.sleep,
        margin=margin,
    )


async def admitted_at(vt: VirtualTime, rl: RateLimiter, tokens: int, max_tokens: int) -> float:
    await rl.acquire(MODEL, tokens, max_tokens)
    return vt.now


# --------------------------------------------------------------------------- buckets


def test_bucket_refills_continuously_up_to_its_capacity() -> None:
    bucket = Bucket.per_minute(600, now=0.0)  # 10 per second
    bucket.take(600, 0.0)
    assert bucket.refill(1.5) == pytest.approx(15.0)
    assert bucket.delay(25, 1.5) == pytest.approx(1.0)
    assert bucket.refill(1000.0) == 600  # never above a minute's budget


def test_bucket_goes_into_debt_and_pays_it_off_before_admitting() -> None:
    bucket = Bucket.per_minute(60, now=0.0)
    bucket.take(60, 0.0)
    bucket.give(-30, 0.0)  # the reply used 30 more than reserved
    assert bucket.delay(1, 0.0) == pytest.approx(31.0)


def test_bucket_margin_shrinks_for_requests_near_the_capacity() -> None:
    bucket = Bucket.per_minute(100, now=0.0)
    assert bucket.delay(50, 0.0, margin=10) == 0.0
    bucket.take(95, 0.0)
    assert bucket.delay(5, 0.0, margin=10) == pytest.approx((15 - 5) * 0.6)
    # A request of the whole capacity needs the full bucket, not the capacity plus a margin.
    assert bucket.delay(100, 0.0, margin=10) == pytest.approx(95 * 0.6)


# --------------------------------------------------------------------------- admission


def test_requests_beyond_the_rpm_budget_wait_for_the_refill() -> None:
    async def main() -> list[float]:
        vt = VirtualTime()
        rl = limiter(vt, rpm=60)  # a full bucket of 60, then one per second
        return await vt.finish(*(admitted_at(vt, rl, 10, 10) for _ in range(63)))

    times = run(main())
    assert times[:60] == [0.0] * 60
    assert times[60:] == pytest.approx([1.0, 2.0, 3.0])


def test_input_tokens_are_paced_by_itpm_and_output_by_max_tokens() -> None:
    async def main() -> tuple[float, float]:
        vt = VirtualTime()
        rl = limiter(vt, itpm=6_000, otpm=600)  # 100 input / s, 10 output / s
        await rl.acquire(MODEL, 6_000, 1)
        (itpm_wait,) = await vt.finish(admitted_at(vt, rl, 500, 1))  # 500 tokens at 100/s
        rl2 = limiter(vt, itpm=6_000, otpm=600)
        start = vt.now
        await rl2.acquire(MODEL, 1, 600)
        (otpm_done,) = await vt.finish(admitted_at(vt, rl2, 1, 100))  # 100 at 10/s
        return itpm_wait, otpm_done - start

    itpm_wait, otpm_wait = run(main())
    assert itpm_wait == pytest.approx(5.0)
    assert otpm_wait == pytest.approx(10.0)


def test_a_refund_at_settle_admits_the_waiting_request_at_once() -> None:
    async def main() -> float:
        vt = VirtualTime()
        rl = limiter(vt, otpm=600)  # 10 output tokens per second
        first = await rl.acquire(MODEL, 10, 600)  # reserves the whole minute
        waiter = asyncio.ensure_future(admitted_at(vt, rl, 10, 300))
        await vt.run_until(2.0)
        assert not waiter.done()  # would need 28 s more of refill
        rl.settle(first, 10, 20)  # it used 20 of its 600: 580 come back
        await vt.idle()
        assert waiter.done()
        return waiter.result()

    assert run(main()) == pytest.approx(2.0)


def test_admission_is_first_come_first_served_so_big_requests_are_not_starved() -> None:
    async def main() -> list[str]:
        vt = VirtualTime()
        rl = limiter(vt, itpm=600)  # 10 tokens per second
        await rl.acquire(MODEL, 600, 1)
        order: list[str] = []

        async def one(name: str, tokens: int) -> None:
            await rl.acquire(MODEL, tokens, 1)
            order.append(name)

        big = asyncio.ensure_future(one("big", 500))
        await vt.idle()
        smalls = [asyncio.ensure_future(one(f"small{i}", 5)) for i in range(5)]
        await vt.finish(big, *smalls)
        return order

    assert run(main()) == ["big", "small0", "small1", "small2", "small3", "small4"]


def test_a_cancelled_waiter_leaves_the_queue_and_the_next_one_moves_up() -> None:
    async def main() -> float:
        vt = VirtualTime()
        rl = limiter(vt, rpm=60)
        for _ in range(60):
            await rl.acquire(MODEL, 1, 1)
        head = asyncio.ensure_future(rl.acquire(MODEL, 1, 1))
        second = asyncio.ensure_future(admitted_at(vt, rl, 1, 1))
        await vt.idle()
        head.cancel()
        (when,) = await vt.finish(second)
        return when

    assert run(main()) == pytest.approx(1.0)


def test_models_have_their_own_buckets_and_queues() -> None:
    async def main() -> tuple[float, float]:
        vt = VirtualTime()
        rl = limiter(vt, rpm=60)
        for _ in range(60):
            await rl.acquire(MODEL, 1, 1)
        waiting = asyncio.ensure_future(admitted_at(vt, rl, 1, 1))
        await vt.idle()
        await rl.acquire("claude-sonnet-4-6", 1, 1)
        other = vt.now
        (haiku,) = await vt.finish(waiting)
        return other, haiku

    assert run(main()) == (0.0, pytest.approx(1.0))


def test_per_model_limits_override_the_default_field_by_field() -> None:
    config = LimitsConfig(
        Limits(rpm=1_000, itpm=50_000),
        models=(("claude-haiku-4-5", Limits(itpm=200_000)),),
    )
    assert config.for_model("claude-haiku-4-5") == Limits(rpm=1_000, itpm=200_000)
    assert config.for_model("claude-haiku-4-5-20251001") == Limits(rpm=1_000, itpm=200_000)
    assert config.for_model("claude-sonnet-4-6") == Limits(rpm=1_000, itpm=50_000)
    assert config.any and not LimitsConfig().any


def test_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="rpm must be at least 1"):
        Limits(rpm=0)
    with pytest.raises(ValueError, match="itpm must be a whole number"):
        Limits(itpm=1.5)  # type: ignore[arg-type]


def test_no_limits_means_no_waiting() -> None:
    async def main() -> float:
        vt = VirtualTime()
        rl = RateLimiter(clock=vt, sleep=vt.sleep)
        for _ in range(10_000):
            await rl.acquire(MODEL, 1_000_000, 100_000)
        return vt.now

    assert run(main()) == 0.0


def test_safety_margin_keeps_a_share_of_the_budget_in_hand() -> None:
    async def main() -> list[float]:
        vt = VirtualTime()
        rl = limiter(vt, margin=0.1, rpm=60)  # keeps 6 requests in hand
        return await vt.finish(*(admitted_at(vt, rl, 1, 1) for _ in range(56)))

    times = run(main())
    assert times[:54] == [0.0] * 54
    assert times[54:] == pytest.approx([1.0, 2.0])


# --------------------------------------------------------------------------- oversize


def test_a_request_larger_than_a_minutes_budget_fails_fast() -> None:
    async def main() -> None:
        vt = VirtualTime()
        rl = limiter(vt, itpm=10_000, otpm=4_000)
        with pytest.raises(ExceedsRateLimitError, match=r"raise itpm if") as too_many_in:
            await rl.acquire(MODEL, 10_001, 100)
        assert "10,001 input tokens" in str(too_many_in.value)
        assert too_many_in.value.error_type == "exceeds_rate_limit"
        with pytest.raises(ExceedsRateLimitError, match=r"max_tokens 8,192 .* raise otpm if"):
            await rl.acquire(MODEL, 10, 8_192)
        assert rl.stats.too_large == 2
        assert vt.now == 0.0
        # Exactly a minute's budget is fine: it waits for a full bucket instead.
        await rl.acquire(MODEL, 10_000, 4_000)

    run(main())


def test_a_waiting_request_fails_when_learned_limits_make_it_too_large() -> None:
    async def main() -> None:
        vt = VirtualTime()
        rl = limiter(vt, itpm=10_000)
        await rl.acquire(MODEL, 10_000, 1)
        waiter = asyncio.ensure_future(rl.acquire(MODEL, 8_000, 1))
        await vt.run_until(1.0)
        rl.observe(MODEL, {"anthropic-ratelimit-input-tokens-limit": "5000"})
        await vt.idle()
        with pytest.raises(ExceedsRateLimitError, match="reported by the API"):
            await waiter

    run(main())


# --------------------------------------------------------------------------- settling


def test_cache_reads_do_not_count_toward_itpm_except_on_older_models() -> None:
    usage = {"input_tokens": 100, "cache_creation_input_tokens": 50, "cache_read_input_tokens": 900}
    assert itpm_tokens(usage, "claude-haiku-4-5") == 150
    assert itpm_tokens(usage, "claude-3-5-haiku-20241022") == 1050
    assert itpm_tokens({"input_tokens": 7}, "claude-sonnet-4-6") == 7


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ApiStatusError("slow down", status=429, error_type="rate_limit_error"), (0, 0, 0)),
        (ApiStatusError("bad", status=400, error_type="invalid_request_error"), (1, 0, 0)),
        (ApiStatusError("Overloaded", status=529, error_type="overloaded_error"), (1, 80, 0)),
        (ApiStatusError("oops", status=500), (1, 80, 0)),
        (ApiConnectionError("reset", error_type="connection_error"), (1, 80, 300)),
        (None, (1, 80, 300)),
    ],
)
def test_what_a_failed_attempt_counts(exc: BaseException | None, expected: tuple[int, ...]) -> None:
    assert failed_attempt_usage(exc, 80, 300) == expected


def _levels(rl: RateLimiter, vt: VirtualTime) -> list[float]:
    lane = rl._lane(MODEL)
    return [b.refill(vt.now) if b is not None else float("nan") for b in lane.buckets]


def test_settle_charges_what_was_used_and_a_429_gives_everything_back() -> None:
    async def main() -> None:
        vt = VirtualTime()
        rl = limiter(vt, rpm=100, itpm=10_000, otpm=5_000)
        ok = await rl.acquire(MODEL, 400, 1_000)
        assert _levels(rl, vt) == [99, 9_600, 4_000]
        rl.settle(ok, 450, 120)
        assert _levels(rl, vt) == [99, 9_550, 4_880]
        rl.settle(ok, 1, 1)  # settling twice changes nothing
        assert _levels(rl, vt) == [99, 9_550, 4_880]
        limited = await rl.acquire(MODEL, 400, 1_000)
        rl.settle_failure(limited, ApiStatusError("x", status=429))
        assert _levels(rl, vt) == [99, 9_550, 4_880]
        overloaded = await rl.acquire(MODEL, 400, 1_000)
        rl.settle_failure(overloaded, ApiStatusError("x", status=529))
        # Reserved input is the estimate scaled by the ratio learned from the first reply.
        assert overloaded.input_tokens == 405
        assert _levels(rl, vt) == [98, 9_550 - 405, 4_880]

    run(main())


def test_the_estimate_is_corrected_by_the_counts_replies_report() -> None:
    async def main() -> list[int]:
        vt = VirtualTime()
        rl = limiter(vt, itpm=1_000_000)
        reserved = []
        for _ in range(60):
            res = await rl.acquire(MODEL, 100, 1)
            reserved.append(res.input_tokens)
            rl.settle(res, 150, 1)  # the estimate runs a third low
        return reserved

    reserved = run(main())
    assert reserved[0] == 100
    assert 145 <= reserved[-1] <= 150
    assert reserved == sorted(reserved)


# --------------------------------------------------------------------------- headers


def test_rate_limit_headers_are_parsed_case_insensitively() -> None:
    headers = {
        "Anthropic-RateLimit-Requests-Limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:59Z",
        "anthropic-ratelimit-input-tokens-limit": "30000",
        "anthropic-ratelimit-input-tokens-remaining": "not-a-number",
        "anthropic-ratelimit-output-tokens-remaining": "-5",
        "request-id": "req_1",
    }
    readings = parse_rate_limit_headers(headers)
    assert readings == {
        REQUESTS: HeaderReading(50, 49, "2025-08-21T12:40:59Z"),
        INPUT: HeaderReading(30_000, None, None),
    }
    assert readings[REQUESTS].reset_at == parse_rfc3339("2025-08-21T12:40:59+00:00").timestamp()
    assert OUTPUT not in readings
    assert parse_rate_limit_headers({"content-type": "application/json"}) == {}


def test_rfc3339_timestamps() -> None:
    """A ``-reset`` header is read as epoch seconds (core.timestamps parses it), None if bad."""

    def reset_at(text: str | None) -> float | None:
        return HeaderReading(None, None, text).reset_at

    assert reset_at("1970-01-01T00:01:00Z") == 60.0
    assert reset_at("1970-01-01T01:00:00.5+01:00") == 0.5
    assert reset_at("yesterday") is None
    assert reset_at(None) is None


def _headers(rpm: tuple[int, int], itpm: tuple[int, int], otpm: tuple[int, int]) -> dict[str, str]:
    headers = {}
    for name, (limit, remaining) in zip(
        ("requests", "input-tokens", "output-tokens"), (rpm, itpm, otpm), strict=True
    ):
        headers[f"anthropic-ratelimit-{name}-limit"] = str(limit)
        headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
    return headers


def test_with_no_limits_configured_the_headers_set_the_pace() -> None:
    async def main() -> tuple[Limits, list[float]]:
        vt = VirtualTime()
        rl = RateLimiter(clock=vt, sleep=vt.sleep, margin=0.0)
        await rl.acquire(MODEL, 10, 10)  # nothing known yet: admitted at once
        rl.observe(MODEL, _headers((60, 2), (100_000, 99_000), (20_000, 19_000)))
        times = await vt.finish(*(admitted_at(vt, rl, 10, 10) for _ in range(4)))
        return rl.limits(MODEL), times

    limits, times = run(main())
    assert limits == Limits(60, 100_000, 20_000)
    assert times == pytest.approx([0.0, 0.0, 1.0, 2.0])


def test_remaining_lowers_the_bucket_but_never_raises_it() -> None:
    async def main() -> list[list[float]]:
        vt = VirtualTime()
        rl = limiter(vt, rpm=100)
        await rl.acquire(MODEL, 1, 1)
        seen = [_levels(rl, vt)[:1]]
        rl.observe(MODEL, {"anthropic-ratelimit-requests-remaining": "40"})
        seen.append(_levels(rl, vt)[:1])
        rl.observe(MODEL, {"anthropic-ratelimit-requests-remaining": "90"})
        seen.append(_levels(rl, vt)[:1])
        return seen

    assert run(main()) == [[99.0], [40.0], [40.0]]


def test_configured_limits_stay_a_ceiling_over_learned_ones() -> None:
    async def main() -> list[Limits]:
        vt = VirtualTime()
        rl = limiter(vt, rpm=1_000, itpm=50_000)
        rl.observe(MODEL, _headers((4_000, 4_000), (40_000, 40_000), (80_000, 80_000)))
        return [rl.limits(MODEL)]

    assert run(main()) == [Limits(rpm=1_000, itpm=40_000, otpm=80_000)]


def test_request_rate_is_set_by_the_binding_limit() -> None:
    async def main() -> float | None:
        vt = VirtualTime()
        rl = limiter(vt, rpm=3_000, itpm=120_000, otpm=1_000_000)
        res = await rl.acquire(MODEL, 50, 100)
        rl.settle(res, 60, 40)
        return rl.request_rate(MODEL)

    # RPM allows 50/s; ITPM 120,000 / 60 / 60 tokens = 33.3/s; OTPM 416/s.
    assert run(main()) == pytest.approx(120_000 / 60 / 60)


# --------------------------------------------------------------------------- 429 pauses


def test_a_429_pause_holds_every_request_of_the_model_until_retry_after() -> None:
    async def main() -> tuple[list[float], list[float]]:
        vt = VirtualTime()
        rl = RateLimiter(clock=vt, sleep=vt.sleep, pause_sleep=vt.sleep)
        rl.pause(MODEL, 7.0)
        times = await vt.finish(*(admitted_at(vt, rl, 10, 10) for _ in range(4)))
        return times, vt.slept

    times, slept = run(main())
    gap = RESUME_RAMP_S / 4
    # One sleep waits out the pause for everyone; then the four leave one by one.
    assert slept[0] == 7.0 and slept.count(7.0) == 1
    assert times == pytest.approx([7.0, 7.0 + gap, 7.0 + 2 * gap, 7.0 + 3 * gap])


def test_429s_within_one_pause_extend_it_and_count_once() -> None:
    async def main() -> tuple[float, int]:
        vt = VirtualTime()
        rl = RateLimiter(clock=vt, sleep=vt.sleep)
        rl.pause(MODEL, 2.0)
        waiter = asyncio.ensure_future(admitted_at(vt, rl, 1, 1))
        await vt.run_until(1.0)
        rl.pause(MODEL, 3.0)  # another 429, arriving 1 s in: now until t=4
        rl.pause(MODEL, 0.5)  # a shorter one never shortens the pause
        (when,) = await vt.finish(waiter)
        return when, rl.stats.pauses

    when, pauses = run(main())
    assert when == pytest.approx(4.0)
    assert pauses == 1


def test_a_pause_empties_the_buckets_so_the_restart_follows_the_refill() -> None:
    async def main() -> list[float]:
        vt = VirtualTime()
        rl = limiter(vt, rpm=60)
        rl.pause(MODEL, 2.0)  # the server said it is empty; two seconds refill two requests
        return await vt.finish(*(admitted_at(vt, rl, 1, 1) for _ in range(4)))

    times = run(main())
    assert times[0] == pytest.approx(2.0)
    assert times[1] == pytest.approx(2.0 + RESUME_RAMP_S / 4)
    assert times[2:] == pytest.approx([3.0, 4.0])


def test_a_pause_that_ended_with_nobody_waiting_leaves_no_ramp_behind() -> None:
    async def main() -> list[float]:
        vt = VirtualTime()
        rl = RateLimiter(clock=vt, sleep=vt.sleep)
        rl.pause(MODEL, 1.0)
        await vt.run_until(5.0)
        return await vt.finish(*(admitted_at(vt, rl, 1, 1) for _ in range(3)))

    assert run(main()) == [5.0, 5.0, 5.0]


def test_held_time_counts_wall_time_not_waiter_time() -> None:
    async def main() -> float:
        vt = VirtualTime()
        rl = limiter(vt, rpm=60)
        await vt.finish(*(admitted_at(vt, rl, 1, 1) for _ in range(65)))
        return rl.stats.held_s

    # Five requests over the budget: admission held someone back for five seconds, not 15.
    assert run(main()) == pytest.approx(5.0)


# --------------------------------------------------------------------------- auto concurrency


def test_little_concurrency() -> None:
    assert little_concurrency(50.0, 2.0) == 150
    assert little_concurrency(50.0, 2.0, headroom=1.0) == 100
    assert little_concurrency(0.5, 0.1) == 1
    assert little_concurrency(10_000.0, 30.0) == 512  # capped
    assert little_concurrency(10.0, 0.0) == 1


def test_the_tuner_starts_small_then_follows_limits_and_latency() -> None:
    async def main() -> list[int]:
        vt = VirtualTime()
        rl = limiter(vt, rpm=3_000)  # 50 requests per second
        applied: list[int] = []
        tuner = ConcurrencyTuner(rl, applied.append)
        res = await rl.acquire(MODEL, 10, 10)
        rl.settle(res, 10, 10)
        tuner.observe(MODEL, 2.0)  # 50/s x 2 s x 1.5 = 150
        tuner.observe(MODEL, 2.05)  # under 10 % change: left alone
        for _ in range(300):
            tuner.observe(MODEL, 0.2)  # latency falls: 50 x 0.2 x 1.5 = 15
        assert tuner.highest == 150
        assert tuner.target() == 15
        return applied

    applied = run(main())
    assert applied[0] == AUTO_START
    assert applied[1] == 150
    assert 15 <= applied[-1] <= 16  # within the 10 % that is left alone
    assert len(applied) < 30  # not resized on every reply


def test_the_tuner_uses_a_default_when_no_limits_are_known() -> None:
    applied: list[int] = []
    rl = RateLimiter()
    tuner = ConcurrencyTuner(rl, applied.append, unlimited=64)
    tuner.observe(MODEL, 1.0)
    assert applied == [AUTO_START, 64]
    tuner.observe("claude-sonnet-4-6", 1.0)
    assert tuner.chosen == 128


def test_reservation_repr_is_readable() -> None:
    async def main() -> Reservation:
        return await RateLimiter().acquire(MODEL, 5, 7)

    text = repr(run(main()))
    assert "input_tokens=5" in text and "output_tokens=7" in text and "lane" not in text


def test_a_429_from_a_request_sent_before_the_pause_starts_no_new_pause() -> None:
    async def main() -> tuple[list[bool], int]:
        vt = VirtualTime()
        rl = RateLimiter(clock=vt, sleep=vt.sleep)
        early = [await rl.acquire(MODEL, 1, 1) for _ in range(3)]
        began = [rl.pause(MODEL, 2.0, early[0])]
        await vt.run_until(5.0)  # that pause is over
        began += [rl.pause(MODEL, 2.0, sent) for sent in early[1:]]  # late 429s of the burst
        late = await rl.acquire(MODEL, 1, 1)
        began.append(rl.pause(MODEL, 2.0, late))  # sent after the pause: a new overload
        return began, rl.stats.pauses

    began, pauses = run(main())
    assert began == [True, False, False, True]
    assert pauses == 2


def test_the_pool_limit_can_change_while_it_runs() -> None:
    from batchrun.engine.pool import Pool

    async def main() -> list[int]:
        pool: Pool[int] = Pool(8)
        pool.set_limit(2)
        seen: list[int] = []

        async def work(i: int) -> None:
            seen.append(pool.in_flight)
            if i == 10:
                pool.set_limit(6)
            for _ in range(3):
                await asyncio.sleep(0)

        await pool.run(iter(range(40)), work)
        return seen

    seen = run(main())
    assert len(seen) == 40
    assert max(seen[:11]) == 2  # held to two in flight until the limit was raised
    assert max(seen[11:]) == 6


def test_stop_cancels_every_waiting_and_later_acquire() -> None:
    async def main() -> list[str]:
        vt = VirtualTime()
        rl = limiter(vt, rpm=60)
        for _ in range(60):
            await rl.acquire(MODEL, 1, 1)
        napping = asyncio.ensure_future(rl.acquire(MODEL, 1, 1))  # head: waits for refill
        queued = asyncio.ensure_future(rl.acquire(MODEL, 1, 1))  # behind it
        rl.pause("claude-sonnet-4-6", 30.0)
        paused = asyncio.ensure_future(rl.acquire("claude-sonnet-4-6", 1, 1))
        await vt.idle()
        rl.stop()
        await vt.idle()
        outcomes = ["cancelled" if t.cancelled() else "admitted" for t in (napping, queued, paused)]
        try:
            await rl.acquire("claude-opus-4-5", 1, 1)
        except asyncio.CancelledError:
            outcomes.append("refused")
        assert vt.now == 0.0  # nobody waited for the refill or the pause to end
        return outcomes

    assert run(main()) == ["cancelled", "cancelled", "cancelled", "refused"]


def test_a_pool_stop_runs_its_stop_callbacks_once() -> None:
    from batchrun.engine.pool import Pool

    called: list[str] = []
    pool: Pool[int] = Pool(2)
    pool.on_stop(lambda: called.append("limiter"))
    pool.stop_admitting()
    pool.stop_admitting()
    assert called == ["limiter"]


def test_a_refund_does_not_cut_a_pause_short() -> None:
    async def main() -> float:
        vt = VirtualTime()
        rl = limiter(vt, otpm=6_000)
        first = await rl.acquire(MODEL, 1, 100)
        rl.pause(MODEL, 5.0)
        waiter = asyncio.ensure_future(admitted_at(vt, rl, 1, 10))
        await vt.run_until(1.0)
        rl.settle(first, 1, 10)  # a refund wakes the head, which must go back to its pause
        (when,) = await vt.finish(waiter)
        return when

    assert run(main()) == pytest.approx(5.0)


# --------------------------------------------------------------------------- 429s in proportion

REFUSED = ApiStatusError("slow down", status=429, error_type="rate_limit_error")
OVERLOADED = ApiStatusError("Overloaded", status=529, error_type="overloaded_error")
PLENTY_LEFT = {
    "anthropic-ratelimit-requests-limit": "1000",
    "anthropic-ratelimit-requests-remaining": "900",
}
NONE_LEFT = {
    "anthropic-ratelimit-requests-limit": "1000",
    "anthropic-ratelimit-requests-remaining": "0",
}


def test_a_429_with_plenty_left_pauses_nobody_and_cuts_concurrency_in_proportion() -> None:
    async def main() -> tuple[Verdict, list[float], RateLimiter]:
        vt = VirtualTime()
        rl = RateLimiter(clock=vt, sleep=vt.sleep, pause_sleep=vt.sleep)
        sent = [await rl.acquire(MODEL, 1, 1) for _ in range(10)]
        for reservation in sent[:9]:
            rl.settle(reservation, 1, 1)
        rl.settle_failure(sent[9], REFUSED)  # 1 of 10 answers refused, nothing else in flight
        verdict = rl.after_429(MODEL, 7.0, sent[9], PLENTY_LEFT)
        times = await vt.finish(admitted_at(vt, rl, 1, 1))
        return verdict, times, rl

    verdict, times, rl = run(main())
    assert verdict is Verdict.SLOW
    assert times == [0.0]  # nobody else waits for that retry-after
    assert rl.stats.pauses == 0
    assert rl.stats.refused_alone == 1 and rl.stats.slowdowns == 1


def test_a_429_saying_none_is_left_pauses_the_model_for_its_retry_after() -> None:
    async def main() -> tuple[Verdict, list[float], int]:
        vt = VirtualTime()
        rl = RateLimiter(clock=vt, sleep=vt.sleep, pause_sleep=vt.sleep)
        sent = await rl.acquire(MODEL, 1, 1)
        rl.settle_failure(sent, REFUSED)
        verdict = rl.after_429(MODEL, 7.0, sent, NONE_LEFT)
        times = await vt.finish(*(admitted_at(vt, rl, 1, 1) for _ in range(2)))
        return verdict, times, rl.stats.pauses

    verdict, times, pauses = run(main())
    assert verdict is Verdict.PAUSE and pauses == 1
    assert times[0] == pytest.approx(7.0)
    assert times[1] > times[0]  # still released gradually after the pause


def test_clustered_429s_without_headers_pause_the_model() -> None:
    async def main() -> tuple[list[Verdict], int]:
        vt = VirtualTime()
        rl = RateLimiter(clock=vt, sleep=vt.sleep, pause_sleep=vt.sleep)
        sent = [await rl.acquire(MODEL, 1, 1) for _ in range(6)]
        rl.settle(sent[0], 1, 1)
        verdicts = []
        for reservation in sent[1:]:  # five 429s in six answers
            rl.settle_failure(reservation, REFUSED)
            verdicts.append(rl.after_429(MODEL, 2.0, reservation, {}))
        return verdicts, rl.stats.pauses

    verdicts, pauses = run(main())
    assert verdicts == [Verdict.SLOW] * 4 + [Verdict.PAUSE]
    assert pauses == 1


def test_a_cut_concurrency_holds_the_next_request_until_an_answer_frees_a_slot() -> None:
    async def main() -> tuple[bool, float]:
        vt = VirtualTime()
        rl = RateLimiter(clock=vt, sleep=vt.sleep, pause_sleep=vt.sleep)
        sent = [await rl.acquire(MODEL, 1, 1) for _ in range(4)]
        rl.settle_failure(sent[3], REFUSED)  # 1 of 1 answer refused: cut to 1 of 3 in flight
        rl.after_429(MODEL, 1.0, sent[3], PLENTY_LEFT)
        waiter = asyncio.ensure_future(admitted_at(vt, rl, 1, 1))
        await vt.run_until(0.5)
        held = not waiter.done()
        await vt.run_until(2.0)
        rl.settle(sent[0], 1, 1)
        rl.settle(sent[1], 1, 1)
        rl.settle(sent[2], 1, 1)
        (when,) = await vt.finish(waiter)
        return held, when

    held, when = run(main())
    assert held
    assert when == pytest.approx(2.0)  # admitted as soon as the answers came back


def test_an_overload_storm_cuts_concurrency_and_single_529s_do_not() -> None:
    async def main() -> tuple[int, int]:
        vt = VirtualTime()
        rl = RateLimiter(clock=vt, sleep=vt.sleep, pause_sleep=vt.sleep)
        sent = [await rl.acquire(MODEL, 1, 1) for _ in range(40)]
        for reservation in sent[:20]:
            rl.settle(reservation, 1, 1)
        rl.settle_failure(sent[20], OVERLOADED)  # one 529 in 21 answers: no storm
        before = rl.stats.slowdowns
        for reservation in sent[21:]:  # then 19 more of 40: most recent answers overloaded
            rl.settle_failure(reservation, OVERLOADED)
        return before, rl.stats.slowdowns

    before, after = run(main())
    assert before == 0
    assert after == 1  # one cut for the storm's generation, not one per 529
