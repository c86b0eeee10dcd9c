"""Rate-limit admission: every attempt waits here until its model's buckets can take it.

A bulk run is only as fast as it gets to the API's limits (``values``) without drawing 429s,
so every attempt passes through a :class:`RateLimiter` before it is sent::

    limiter = RateLimiter(LimitsConfig(Limits(rpm=1_000, itpm=400_000)))
    reservation = await limiter.acquire("claude-haiku-4-5", estimated_input, max_tokens)
    try:
        reply = await client.create(body)
    except ApiError as exc:
        limiter.settle_failure(reservation, exc)
        raise
    limiter.settle(reservation, itpm_tokens(usage, model), usage["output_tokens"])
    limiter.observe("claude-haiku-4-5", reply.headers)

This module is the stateful part of ``limits``: queues, pauses and learned figures per model,
on an event loop. The buckets' arithmetic (``buckets``), the header parsing (``headers``) and
what an attempt counts (``usage``) are kept out of it, so what is left here is admission and
its feedback.

Admission
    ``acquire`` takes 1 from the request bucket, the estimated input tokens from the ITPM bucket
    and ``max_tokens`` from the OTPM bucket (the API reserves output the same way), waiting
    until all three hold that much. Waiters queue per model in FIFO order and only the head
    may be admitted, so a big request is never starved by a stream of small ones. Buckets keep
    a small safety margin (``SAFETY_MARGIN`` of a minute's budget) that the estimate's errors
    eat into instead of the server's bucket; at steady state it costs nothing, since the rate
    is the refill rate whatever level the bucket hovers at.

Settling
    ``settle`` gives back (or takes) the difference once the usage is known, as counted toward
    ITPM (:func:`~batchrun.limits.usage.itpm_tokens`). The ratio of counted to estimated input
    tokens is learned per model (moving average), and later reservations are scaled by it: the
    local estimate's bias (the simulator's tokenizer is not Claude's) and the share of the
    prompt read from the cache are both corrected after a few replies.

    A failed attempt settles too, by what the API counts
    (:func:`~batchrun.limits.usage.failed_attempt_usage`, whose module has the table).

Learned limits
    Every response's ``anthropic-ratelimit-{requests,input-tokens,output-tokens}-{limit,
    remaining,reset}`` headers are read (``observe``). A limit from the headers becomes the
    bucket's size, under the configured one if any (configured limits stay a ceiling), so a run
    with no limits configured paces itself to the account's tier. ``remaining`` lowers the
    bucket to what the server says is left, never raises it: the server has not yet seen the
    requests still on their way, and a refund arrives with their own responses. So other users
    of the same organisation's limit, and estimates that run low, are caught as they happen.

429 coordination
    ``after_429`` first asks whether the 429 says the bucket is empty (``congestion``: its
    own or recent ``-remaining`` headers near zero, or 429s clustering). If so, ``pause``
    stops admission for the model until the server's ``retry-after``, for every worker at
    once, and empties its buckets. When the pause ends, the requests it held are released one
    by one over ``RESUME_RAMP_S`` in their queue order, not all at the same instant. The retry
    loop's own wait for that 429 is skipped by the caller (the pause already is that wait), so
    the two never add up. If not, only the refused request waits for its retry-after (the
    caller's retry loop) and the model's concurrency is cut in proportion to the share of
    recent answers refused, then regrown additively (``congestion.Window``). A storm of 529s
    (most recent answers overloaded) is cut the same way at ``settle_failure``.

A request that needs more than a whole minute's budget (estimated input above ITPM,
``max_tokens`` above OTPM) could never be admitted: ``acquire`` raises
:class:`~batchrun.core.errors.ExceedsRateLimitError` at once instead of waiting forever.

Shared buckets
    With a ``store`` (a :class:`BucketStore`, e.g. ``shared.RedisBuckets`` for
    ``--rate-limit-store``), the buckets live there instead of in the lanes: admission checks
    and takes in one call to the store, settling and the headers adjust the store's levels,
    and a pause is told to it, so every worker sharing the store paces as one. A pause that
    another worker began comes back from admission (``Admission.paused``) and is taken up
    here like one of our own. The queue, the ramp, the concurrency window and the learned
    estimate ratio stay per worker.

Time comes from injected ``clock`` and ``sleep`` seams, so the tests drive it with a fake clock
and never sleep. Everything here runs on one event loop; nothing is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from batchrun.core.errors import ApiError, ExceedsRateLimitError
from batchrun.core.wording import option
from batchrun.limits.buckets import Bucket
from batchrun.limits.congestion import (
    HEADERS_FRESH_S,
    Answer,
    RecentAnswers,
    Verdict,
    Window,
    judge_429,
)
from batchrun.limits.headers import HeaderReading, parse_rate_limit_headers
from batchrun.limits.usage import RATE_LIMIT_STATUS, failed_attempt_usage
from batchrun.limits.values import INPUT, OUTPUT, REQUESTS, WINDOW_S, Limits, LimitsConfig

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_UNITS = ("requests", "input tokens", "output tokens")
_KEYS = ("rpm", "itpm", "otpm")  # the settings of the three limits

SAFETY_MARGIN = 0.02
"""Share of a minute's budget each bucket keeps in hand against estimation error."""

RESUME_RAMP_S = 1.0
"""After a 429 pause, the requests it held are released evenly over this many seconds."""

ESTIMATE_SMOOTHING = 0.1
"""Weight of the newest reply in the moving averages (estimate ratio, usage per request, and
the latency of ``tuner``)."""

WINDOW_WAIT_S = 1.0
"""A request held by a cut concurrency sleeps at most this long between looks (an answer
that frees a slot wakes it at once)."""

OVERLOADED_STATUS = 529

RATIO_BOUNDS = (0.05, 10.0)
"""How far the learned counted/estimated ratio may move from 1: a few odd replies must not
make reservations absurd."""


@dataclass
class LimiterStats:
    """What admission cost the run, for the summary and the progress bar."""

    held_s: float = 0.0  # wall seconds admission was holding some request back
    pauses: int = 0  # whole-model pauses: a 429 said the bucket is empty (or 429s clustered)
    refused_alone: int = 0  # 429s only their own request waited out (no whole-model pause)
    slowdowns: int = 0  # proportional cuts of a model's concurrency (429s, a 529 storm)
    too_large: int = 0  # requests refused because they exceed a whole minute's budget
    shared_pauses: int = 0  # pauses another worker began, taken up through the shared store


@dataclass(frozen=True)
class Admission:
    """A store's answer to one admission: taken (``wait`` 0), or how long to wait first.

    ``paused``: the model is paused for every worker (a 429 said its bucket is empty) for
    ``wait`` more seconds; nothing was taken.
    """

    wait: float
    paused: bool = False


class BucketStore(Protocol):
    """Where a limiter keeps its buckets when they are shared with other workers.

    ``limits`` is always the caller's limits in force for the model (configured, lowered by
    what it learned); the store may lower them further by what other workers learned. Each
    call is atomic in the store. Triples are (requests, input tokens, output tokens).
    """

    def take(
        self, model: str, limits: Limits, need: tuple[float, float, float], margin: float
    ) -> Admission:
        """Take ``need`` if every bucket holds it plus ``margin`` of its capacity."""
        ...

    def give(self, model: str, limits: Limits, deltas: tuple[float, float, float]) -> None:
        """Give back ``deltas`` (negative: take more), never above the capacity."""
        ...

    def observe(self, model: str, limits: Limits, readings: Mapping[int, HeaderReading]) -> None:
        """A response's rate-limit headers: learned limits, and ``-remaining`` levels."""
        ...

    def pause(self, model: str, limits: Limits, seconds: float) -> None:
        """Pause the model for every worker for ``seconds`` and empty its buckets."""
        ...


@dataclass(eq=False)
class Reservation:
    """What one attempt took from its model's buckets; hand it back to ``settle``."""

    model: str
    input_tokens: int  # reserved: the estimate scaled by the learned ratio
    output_tokens: int  # reserved: max_tokens
    estimate: int  # the caller's raw estimate
    lane: _Lane = field(repr=False)
    epoch: int = 0  # pauses of its model before it was admitted
    cuts: int = 0  # concurrency cuts of its model before it was admitted
    settled: bool = False


class _Lane:
    """One model's buckets, queue, pause and learned figures."""

    def __init__(
        self, model: str, configured: Limits, now: float, store: BucketStore | None = None
    ) -> None:
        self.model = model
        self.store = store
        self.configured = configured.values()
        self.learned: list[int | None] = [None, None, None]
        self.buckets: list[Bucket | None] = [
            None if limit is None else Bucket.per_minute(limit, now) for limit in self.configured
        ]
        self.queue: deque[asyncio.Future[None]] = deque()
        self.wake: asyncio.Future[None] | None = None
        self.pause_end = -math.inf
        self.slept_to = -math.inf
        self.epoch = 0  # pauses so far
        self.ramp_pending = False
        self.ramp_left = 0
        self.ramp_gap = 0.0
        self.ratio = 1.0
        self.avg_input: float | None = None
        self.avg_output: float | None = None
        self.window = Window()  # the concurrency left after cuts (congestion)
        self.recent = RecentAnswers()
        self.readings: dict[int, tuple[float, HeaderReading]] = {}  # latest, with its time

    def limit(self, dim: int) -> int | None:
        """The limit in force: the configured one, lowered by a learned one."""
        known = [v for v in (self.configured[dim], self.learned[dim]) if v is not None]
        return min(known) if known else None

    def limits(self) -> Limits:
        return Limits(*(self.limit(dim) for dim in range(3)))

    def paused(self, now: float) -> bool:
        return max(now, self.slept_to) < self.pause_end

    @property
    def free(self) -> bool:
        """No limit known (no bucket), never paused, no cut in force and nobody waiting:
        admission has nothing to do."""
        return (
            self.store is None
            and self.pause_end == -math.inf
            and not any(self.buckets)
            and self.window.limit is None
            and not self.queue
        )

    def fresh_readings(self, now: float) -> dict[int, HeaderReading]:
        """The latest header readings of each dimension, if recent enough to speak of now."""
        return {
            dim: reading
            for dim, (seen, reading) in self.readings.items()
            if now - seen <= HEADERS_FRESH_S
        }

    def delay(self, need: tuple[float, float, float], now: float, margin: float) -> float:
        longest = 0.0
        for bucket, amount in zip(self.buckets, need, strict=True):
            if bucket is not None:
                longest = max(longest, bucket.delay(amount, now, margin * bucket.capacity))
        return longest

    def try_take(self, need: tuple[float, float, float], now: float, margin: float) -> Admission:
        """Take ``need`` from the buckets if they hold it now; else how long to wait."""
        if self.store is not None:
            return self.store.take(self.model, self.limits(), need, margin)
        delay = self.delay(need, now, margin)
        if delay > 0:
            return Admission(delay)
        self.adjust((-need[0], -need[1], -need[2]), now)
        return Admission(0.0)

    def adjust(self, deltas: tuple[float, float, float], now: float) -> None:
        if self.store is not None:
            if any(deltas):
                self.store.give(self.model, self.limits(), deltas)
            return
        for bucket, delta in zip(self.buckets, deltas, strict=True):
            if bucket is not None and delta:
                bucket.give(delta, now)

    def learn(self, dim: int, reading: HeaderReading, now: float) -> None:
        self.readings[dim] = (now, reading)
        if reading.limit is not None and reading.limit > 0:
            self.learned[dim] = reading.limit
            limit = self.limit(dim)
            assert limit is not None
            bucket = self.buckets[dim]
            if bucket is None:
                self.buckets[dim] = Bucket.per_minute(limit, now)
            elif bucket.capacity != limit:
                bucket.resize_per_minute(limit, now)
        bucket = self.buckets[dim]
        if reading.remaining is not None and bucket is not None:
            bucket.lower_to(reading.remaining, now)

    def learn_usage(self, estimate: int, input_tokens: int, output_tokens: int) -> None:
        if estimate > 0 and input_tokens > 0:
            low, high = RATIO_BOUNDS
            sample = min(max(input_tokens / estimate, low), high)
            self.ratio += ESTIMATE_SMOOTHING * (sample - self.ratio)
        self.avg_input = smoothed(self.avg_input, input_tokens)
        self.avg_output = smoothed(self.avg_output, output_tokens)


def smoothed(average: float | None, sample: float) -> float:
    """The moving average ``average`` with ``sample`` added (``ESTIMATE_SMOOTHING``)."""
    return sample if average is None else average + ESTIMATE_SMOOTHING * (sample - average)


class RateLimiter:
    """Admission control over RPM / ITPM / OTPM buckets per model; see the module docstring.

    ``clock`` and ``sleep`` pace admission; ``pause_sleep`` (default ``sleep``) waits out a
    429's pause and the ramp after it: the runner passes its retry sleep there, since the
    pause stands in for the retry loop's wait. ``margin`` is ``SAFETY_MARGIN`` unless given.
    ``store`` keeps the buckets and the pause where other workers share them (module docstring,
    "Shared buckets"); without one they are this limiter's own.
    """

    def __init__(
        self,
        limits: LimitsConfig | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        pause_sleep: Sleep | None = None,
        margin: float = SAFETY_MARGIN,
        store: BucketStore | None = None,
    ) -> None:
        self._config = limits or LimitsConfig()
        self._store = store
        self._clock = clock
        self._sleep = sleep
        self._pause_sleep = pause_sleep or sleep
        self._margin = margin
        self._lanes: dict[str, _Lane] = {}
        self._stopped = False
        self.stats = LimiterStats()

    # ------------------------------------------------------------------ reading

    def limits(self, model: str) -> Limits:
        """The limits in force for ``model`` (configured, lowered by what the API said)."""
        return self._lane(model).limits()

    def models(self) -> Iterator[str]:
        """Every model seen so far, in first-seen order."""
        return iter(self._lanes)

    def request_rate(self, model: str) -> float | None:
        """Requests per second the limits allow at the average usage seen; None if unlimited."""
        lane = self._lane(model)
        rates = []
        for dim, per_request in (
            (REQUESTS, 1.0),
            (INPUT, lane.avg_input),
            (OUTPUT, lane.avg_output),
        ):
            limit = lane.limit(dim)
            if limit is not None and per_request is not None:
                rates.append(limit / WINDOW_S / max(per_request, 1.0))
        return min(rates) if rates else None

    # ------------------------------------------------------------------ admission

    async def acquire(self, model: str, input_tokens: int, max_tokens: int) -> Reservation:
        """Wait for admission (FIFO per model); raise ExceedsRateLimitError if it never can."""
        if self._stopped:
            raise asyncio.CancelledError("the run stopped admitting requests")
        lane = self._lane(model)
        need = (1.0, float(math.ceil(input_tokens * lane.ratio)), float(max_tokens))
        if lane.free:
            # No limit known and never paused (no --rpm/--itpm/--otpm, no limit headers yet):
            # nothing can refuse, hold back or be charged, and no one can be queued.
            lane.window.admitted()
            return Reservation(
                model,
                int(need[INPUT]),
                max_tokens,
                input_tokens,
                lane,
                lane.epoch,
                lane.window.cuts,
            )
        self._check_fits(lane, need, input_tokens)
        now = self._clock()
        if not lane.queue and not lane.paused(now) and not lane.window.full:
            # Nobody is waiting, so no pause that is over still holds anyone to ramp up.
            lane.ramp_pending = False
            lane.ramp_left = 0
            if self._try_take(lane, need, now) <= 0:
                return self._reservation(lane, need, input_tokens)
        return await self._queue_up(lane, need, input_tokens)

    async def _queue_up(
        self, lane: _Lane, need: tuple[float, float, float], estimate: int
    ) -> Reservation:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane.queue.append(turn)
        try:
            if lane.queue[0] is not turn:
                await turn  # the head before us sets it when it leaves
            since = self._clock()
            try:
                await self._until_admissible(lane, need, estimate)
            finally:
                self.stats.held_s += max(self._clock() - since, 0.0)
            return self._reservation(lane, need, estimate)
        finally:
            self._leave(lane, turn)

    async def _until_admissible(
        self, lane: _Lane, need: tuple[float, float, float], estimate: int
    ) -> None:
        """Wait, as the head of the queue, until the pause, the ramp and the buckets allow;
        then take ``need`` from the buckets."""
        ramped = False
        while True:
            if self._stopped:
                raise asyncio.CancelledError("the run stopped admitting requests")
            self._check_fits(lane, need, estimate)  # limits may have been learned meanwhile
            if lane.paused(self._clock()):
                await self._sit_out_pause(lane)
                ramped = False
                continue
            if lane.ramp_pending:
                lane.ramp_pending = False
                lane.ramp_left = len(lane.queue)
                lane.ramp_gap = RESUME_RAMP_S / max(lane.ramp_left, 1)
            elif lane.ramp_left and not ramped:
                await self._wait(lane, lane.ramp_gap, self._pause_sleep, early=False)
            if lane.ramp_left and not ramped:
                ramped = True
                lane.ramp_left -= 1
                continue  # a pause may have begun during the gap
            if lane.window.full:  # a cut concurrency: wait for an answer to free a slot
                await self._wait(lane, WINDOW_WAIT_S, self._sleep, early=True)
                continue
            delay = self._try_take(lane, need, self._clock())
            if delay <= 0:
                return
            if lane.paused(self._clock()):
                continue  # another worker's pause, just taken up
            await self._wait(lane, delay, self._sleep, early=True)

    async def _sit_out_pause(self, lane: _Lane) -> None:
        target = lane.pause_end
        step = target - max(self._clock(), lane.slept_to)
        if await self._wait(lane, step, self._pause_sleep, early=False):
            # Only once slept through: if this head is cancelled, the next one must still wait.
            lane.slept_to = max(lane.slept_to, target)

    async def _wait(self, lane: _Lane, seconds: float, sleep: Sleep, *, early: bool) -> bool:
        """Sleep ``seconds`` as the head of ``lane``; True if the whole sleep ran.

        ``stop()`` always ends it at once; with ``early``, so does anything that may let the
        head in sooner (a refund at settle, new limits from the headers).
        """
        sleeper = asyncio.ensure_future(sleep(seconds))
        try:
            while not sleeper.done():
                wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                lane.wake = wake
                try:
                    await asyncio.wait((sleeper, wake), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if lane.wake is wake:
                        lane.wake = None
                    if not wake.done():
                        wake.cancel()
                if not sleeper.done() and (early or self._stopped):
                    return False
            return True
        finally:
            if not sleeper.done():
                sleeper.cancel()

    def stop(self) -> None:
        """Admit nothing more (the run is stopping): waiting and later acquires are cancelled.

        Their tasks get ``asyncio.CancelledError``, so a row that was never sent is left for a
        later run instead of being recorded as failed.
        """
        self._stopped = True
        for lane in self._lanes.values():
            for turn in list(lane.queue):
                if not turn.done():
                    turn.cancel()
            self._notify(lane)

    def _leave(self, lane: _Lane, turn: asyncio.Future[None]) -> None:
        if lane.queue and lane.queue[0] is turn:
            lane.queue.popleft()
            if lane.queue and not lane.queue[0].done():
                lane.queue[0].set_result(None)
        else:
            with contextlib.suppress(ValueError):  # already gone
                lane.queue.remove(turn)

    def _try_take(self, lane: _Lane, need: tuple[float, float, float], now: float) -> float:
        """Take ``need`` from the buckets (0), or the seconds to wait before trying again."""
        admission = lane.try_take(need, now, self._margin)
        if admission.paused:
            self._take_up_pause(lane, admission.wait)
            return max(admission.wait, 0.0)
        return admission.wait

    def _reservation(
        self, lane: _Lane, need: tuple[float, float, float], estimate: int
    ) -> Reservation:
        """The reservation of ``need``, already taken from the buckets."""
        lane.window.admitted()
        taken = (int(need[INPUT]), int(need[OUTPUT]))
        return Reservation(
            lane.model, *taken, estimate, lane, epoch=lane.epoch, cuts=lane.window.cuts
        )

    def _check_fits(self, lane: _Lane, need: tuple[float, float, float], estimate: int) -> None:
        for dim in (INPUT, OUTPUT):
            limit = lane.limit(dim)
            if limit is not None and need[dim] > limit:
                self.stats.too_large += 1
                raise ExceedsRateLimitError(_too_large_message(lane, dim, need[dim], limit))

    # ------------------------------------------------------------------ feedback

    def settle(self, reservation: Reservation, input_tokens: int, output_tokens: int) -> None:
        """The attempt succeeded: charge what it really used (ITPM-counted input, output)."""
        if self._mark_settled(reservation):
            lane = reservation.lane
            self._answered(lane, Answer.OK)
            lane.learn_usage(reservation.estimate, input_tokens, output_tokens)
            self._correct(reservation, (1, input_tokens, output_tokens))

    def settle_failure(self, reservation: Reservation, exc: BaseException | None) -> None:
        """The attempt failed: charge what the API counts for it (``failed_attempt_usage``)."""
        if self._mark_settled(reservation):
            lane = reservation.lane
            answer = _answer_of(exc)
            self._answered(lane, answer)
            if answer is Answer.OVERLOADED:
                shares = lane.recent.shares(self._clock())
                if shares.storm and lane.window.cut(shares.overloaded_share, reservation.cuts):
                    self.stats.slowdowns += 1
            used = failed_attempt_usage(exc, reservation.input_tokens, reservation.output_tokens)
            self._correct(reservation, used)

    def _answered(self, lane: _Lane, answer: Answer | None) -> None:
        """An attempt of ``lane`` is over: free its slot, count what it came back with."""
        lane.window.finished(answer is Answer.OK)
        if answer is not None:
            lane.recent.add(answer, self._clock())
        if lane.queue:
            self._notify(lane)  # a slot may have opened for the head

    @staticmethod
    def _mark_settled(reservation: Reservation) -> bool:
        if reservation.settled:
            return False
        reservation.settled = True
        return True

    def _correct(self, reservation: Reservation, used: tuple[int, int, int]) -> None:
        lane = reservation.lane
        if lane.free:
            return  # no bucket to correct, no one waiting to wake
        taken = (1, reservation.input_tokens, reservation.output_tokens)
        deltas = (
            float(taken[0] - used[0]),
            float(taken[1] - used[1]),
            float(taken[2] - used[2]),
        )
        lane.adjust(deltas, self._clock())
        self._notify(lane)

    def observe(self, model: str, headers: Mapping[str, str]) -> None:
        """Learn limits and remaining budgets from a response's rate-limit headers."""
        readings = parse_rate_limit_headers(headers)
        if not readings:
            return
        lane = self._lane(model)
        now = self._clock()
        for dim, reading in readings.items():
            lane.learn(dim, reading, now)
        if lane.store is not None:
            lane.store.observe(model, lane.limits(), readings)
        self._notify(lane)

    def after_429(
        self,
        model: str,
        seconds: float,
        sent: Reservation | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Verdict:
        """A 429 (already settled): pause the model, or slow it down; see ``congestion``.

        ``seconds`` is the retry wait (the server's retry-after), ``sent`` the attempt that drew
        the 429, ``headers`` its response headers. ``Verdict.PAUSE``: every request of the
        model waits (``pause``), the caller skips its own retry wait. ``Verdict.SLOW``: only
        the refused request waits, in the caller's retry loop; the model's concurrency is cut
        by the share of recent answers refused.
        """
        lane = self._lane(model)
        now = self._clock()
        own = parse_rate_limit_headers(headers or {})
        verdict = judge_429(own, lane.fresh_readings(now), lane.recent.shares(now))
        if verdict is Verdict.PAUSE:
            self.pause(model, seconds, sent)
            return verdict
        self.stats.refused_alone += 1
        share = lane.recent.shares(now).refused_share
        if lane.window.cut(share, None if sent is None else sent.cuts):
            self.stats.slowdowns += 1
        return verdict

    def pause(self, model: str, seconds: float, sent: Reservation | None = None) -> bool:
        """A 429: hold every request for ``model`` for ``seconds``, then ramp back up.

        ``sent`` is the attempt that drew the 429. One admitted before the latest pause began
        belongs to the burst that pause already answers: its 429 may lengthen the pause while
        it lasts, but starts no new one. Returns True when a new pause began.
        """
        lane = self._lane(model)
        now = self._clock()
        end = now + max(seconds, 0.0)
        if lane.paused(now) or (sent is not None and sent.epoch < lane.epoch):
            if lane.paused(now):
                lane.pause_end = max(lane.pause_end, end)
                if lane.store is not None:
                    lane.store.pause(model, lane.limits(), lane.pause_end - now)
            return False
        self.stats.pauses += 1
        self._begin_pause(lane, end, now)
        if lane.store is not None:
            lane.store.pause(model, lane.limits(), end - now)  # every worker's pause
        return True

    def _take_up_pause(self, lane: _Lane, seconds: float) -> None:
        """Another worker paused the model (through the store): hold our requests too."""
        now = self._clock()
        if lane.paused(now):
            lane.pause_end = max(lane.pause_end, now + seconds)
            return
        self.stats.shared_pauses += 1
        self._begin_pause(lane, now + seconds, now)

    @staticmethod
    def _begin_pause(lane: _Lane, end: float, now: float) -> None:
        lane.epoch += 1  # 429s of requests admitted before it start no new pause
        lane.pause_end = max(lane.pause_end, end)
        lane.ramp_pending = True
        for bucket in lane.buckets:
            if bucket is not None:
                bucket.lower_to(0.0, now)  # the server has just said it is empty

    def _notify(self, lane: _Lane) -> None:
        wake = lane.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _lane(self, model: str) -> _Lane:
        lane = self._lanes.get(model)
        if lane is None:
            configured = self._config.for_model(model)
            lane = self._lanes[model] = _Lane(model, configured, self._clock(), self._store)
        return lane


def _answer_of(exc: BaseException | None) -> Answer | None:
    """What a failed attempt came back with; None when it was abandoned (cancelled)."""
    if exc is None:
        return None
    if isinstance(exc, ApiError):
        if exc.status == RATE_LIMIT_STATUS:
            return Answer.REFUSED
        if exc.status == OVERLOADED_STATUS or exc.error_type == "overloaded_error":
            return Answer.OVERLOADED
    return Answer.OTHER


def _too_large_message(lane: _Lane, dim: int, amount: float, limit: int) -> str:
    source = "configured" if lane.configured[dim] == limit else "reported by the API"
    if dim == OUTPUT:
        what = f"max_tokens {int(amount):,} is more than"
        fix = "lower max_tokens"
    else:
        what = f"this request needs about {int(amount):,} input tokens, more than"
        fix = "shorten the row"
    return (
        f"{what} the whole {_UNITS[dim]}-per-minute limit of {lane.model} ({limit:,}, "
        f"{source}): it could never be admitted; {fix}, or raise {option(_KEYS[dim])} if your "
        "limit is higher"
    )
