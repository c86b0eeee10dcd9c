"""One request to its outcome row: rate-limit admission, the send, retries, 429 pauses.

Until the API has answered once, a failure that says nothing is there (no connection, an
answer that is not the API's) gets only a few quick retries (``engine.fail_fast``): a wrong
--base-url stops the run in seconds instead of after every row's full backoff.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from batchrun.client.messages import MessagesClient, Reply
from batchrun.client.retry import is_fatal, send_with_retries
from batchrun.config.layers import EngineSettings
from batchrun.core.errors import ApiError, ApiStatusError, FatalRunError
from batchrun.cost.models import local_input_tokens
from batchrun.engine.admission import Gate
from batchrun.engine.fail_fast import QUICK_WAIT_S, FailFast, is_an_answer
from batchrun.engine.outcome import RowSettings, Work, error_row, ok_row
from batchrun.engine.tally import RowTally
from batchrun.engine.waits import WaitNotices
from batchrun.limits.congestion import Verdict
from batchrun.limits.limiter import RateLimiter, Reservation
from batchrun.limits.tuner import ConcurrencyTuner
from batchrun.limits.usage import RATE_LIMIT_STATUS, itpm_tokens

Sleep = Callable[[float], Awaitable[None]]

# The SDK refuses non-streaming requests above this many output tokens, since they can
# outlast a 10-minute timeout (docs/api-facts.md §5.2); we stream them instead.
STREAM_ABOVE_MAX_TOKENS = 21_333


def streams(settings: EngineSettings, body: dict[str, Any]) -> bool:
    """Whether ``body`` is sent with ``stream: true``: asked for (``--stream``), or a
    ``max_tokens`` the SDK would refuse to wait for (the client adds the field)."""
    return settings.stream or body.get("max_tokens", 0) > STREAM_ABOVE_MAX_TOKENS


class Sender:
    """Sends one request with retries and turns the outcome into an output row.

    Every attempt passes rate-limit admission first and reports its usage and the response's
    rate-limit headers after (``batchrun.limits``). A 429 that says the bucket is empty pauses
    admission for the model, for every worker at once; that pause stands in for the retry
    loop's own wait for the 429, which is skipped, so the two never add up. Any other 429 is
    waited out by its own request alone, as the SDK does, while the limiter slows the model
    down in proportion (``limits.congestion``). Waits of more than a few seconds are told
    (``notices``); ``--max-retry-wait`` caps them.
    """

    def __init__(
        self,
        settings: EngineSettings,
        rows: RowSettings,
        client: MessagesClient,
        tally: RowTally,
        sleep: Sleep,
        limiter: RateLimiter,
        notices: WaitNotices | None = None,
        fail_fast: FailFast | None = None,
        gate: Gate | None = None,
    ) -> None:
        self._settings = settings
        self._rows = rows
        self._client = client
        self._tally = tally
        self._sleep = sleep
        self._limiter = limiter
        self.tuner: ConcurrencyTuner | None = None  # --concurrency auto
        self._notices = notices
        self._fail_fast = fail_fast  # told of the API's first answer; quick retries until then
        self._gate = gate  # asked last before each attempt: may this run still send?

    async def send(
        self,
        work: Work,
        body: dict[str, Any],
        on_answer_start: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """The row's outcome: sent with retries. ``on_answer_start``: a streamed answer began
        (``engine.warmup`` lets the rest of a prefix group go then)."""
        settings = self._settings
        stream = streams(settings, body)
        started = time.perf_counter()
        waits = RetryWaits(self, str(body.get("model") or ""))
        estimate = local_input_tokens(body, self._rows.prices)
        try:
            reply, attempts = await send_with_retries(
                lambda: self._attempt(body, work.content, stream, waits, estimate, on_answer_start),
                max_retries=settings.max_retries,
                sleep=waits.sleep,
                on_retry=waits.on_retry,
                max_wait=settings.max_retry_wait,
                give_up=waits.give_up,
            )
        except ApiError as exc:
            if is_fatal(exc):
                raise FatalRunError(f"the API refused the run: {exc}") from exc
            row = error_row(work, self._rows, exc.error_type, exc.message, exc.status, exc.attempts)
            row.update(request_id=exc.request_id, elapsed_ms=(time.perf_counter() - started) * 1000)
            return row
        row = ok_row(work, self._rows, reply.message, checked=True)
        row.update(
            attempts=attempts,
            latency_ms=reply.latency_ms,
            elapsed_ms=(time.perf_counter() - started) * 1000,
            request_id=reply.request_id,
            http_status=reply.status,
        )
        return row

    async def _attempt(
        self,
        body: dict[str, Any],
        content: bytes | None,
        stream: bool,
        waits: RetryWaits,
        estimate: int,
        on_answer_start: Callable[[], None] | None = None,
    ) -> Reply:
        """One send: admission, the request, then usage and headers back to the limiter."""
        limiter, model = self._limiter, waits.model
        reservation = await limiter.acquire(model, estimate, int(body.get("max_tokens") or 0))
        if self._gate is not None:
            try:
                await self._gate.admit()
            except BaseException:
                limiter.settle_failure(reservation, None)  # admitted, but never sent
                raise
        waits.sent = reservation
        self._tally.rate_wait_s = limiter.stats.held_s
        try:
            reply = await self._client.create(
                body, stream=stream, content=content, on_answer_start=on_answer_start
            )
        except BaseException as exc:
            limiter.settle_failure(reservation, exc if isinstance(exc, ApiError) else None)
            if isinstance(exc, ApiStatusError) and exc.status == RATE_LIMIT_STATUS:
                self._tally.rate_limited_429s += 1
                limiter.observe(model, exc.rate_limit_headers)
            self._note_failure(exc, waits)
            raise
        if self._fail_fast is not None:
            self._fail_fast.answered()
        usage = reply.message.get("usage") or {}
        limiter.settle(reservation, itpm_tokens(usage, model), int(usage.get("output_tokens") or 0))
        limiter.observe(model, reply.headers)
        if self.tuner is not None:
            self.tuner.observe(model, reply.latency_ms / 1000.0)
        return reply

    def _note_failure(self, exc: BaseException, waits: RetryWaits) -> None:
        """What a failed attempt says of the API: an answer (any status) means it is there;
        a failure that says nothing is there, before any answer, gets quick retries only
        (``waits.quick``, counted against ``waits.quick_limit``)."""
        waits.quick = False
        fail_fast = self._fail_fast
        if fail_fast is None:
            return
        if is_an_answer(exc):
            fail_fast.answered()
            return
        limit = fail_fast.quick_retries(exc)
        if limit is not None:
            waits.quick, waits.quick_limit = True, limit
            waits.quick_failures += 1

    def pause_for(
        self, model: str, exc: BaseException, wait: float, sent: Reservation | None, attempt: int
    ) -> bool:
        """Count a retry; True when a 429 paused admission for the whole model instead (then
        the retry loop's own wait is skipped: the pause is that wait)."""
        self._tally.retries += 1
        paused = False
        if isinstance(exc, ApiError) and exc.status == RATE_LIMIT_STATUS:
            headers = exc.rate_limit_headers if isinstance(exc, ApiStatusError) else None
            verdict = self._limiter.after_429(model, wait, sent, headers)
            paused = verdict is Verdict.PAUSE
            self._report_429s()
        if self._notices is not None:
            self._notices.retry(model, exc, wait, paused=paused, attempt=attempt)
        return paused

    def _report_429s(self) -> None:
        stats, tally = self._limiter.stats, self._tally
        tally.rate_pauses = stats.pauses
        tally.rate_429s_retried = stats.refused_alone
        tally.rate_slowdowns = stats.slowdowns

    async def retry_sleep(self, seconds: float) -> None:
        await self._sleep(seconds)

    def report(self) -> None:
        """Put what admission did into the tally, at the end of the run."""
        tally, limiter = self._tally, self._limiter
        tally.rate_wait_s = limiter.stats.held_s
        self._report_429s()
        tally.rate_limits = {model: limiter.limits(model) for model in limiter.models()}
        if self.tuner is not None:
            tally.concurrency_chosen = self.tuner.chosen


class RetryWaits:
    """The retry loop's waits for one row: skipped after a 429 that paused admission instead.

    The next attempt then waits in the limiter's queue, in order with every other request,
    until the pause (the server's retry-after) is over. After a 429 that did not pause the
    model the row waits here, alone, like after any other retryable failure.
    """

    def __init__(self, sender: Sender, model: str) -> None:
        self.model = model
        self.sent: Reservation | None = None  # the latest attempt's admission
        self._sender = sender
        self._skip_next = False
        self._attempts = 1
        self.quick = False  # the latest failure gets a quick retry: the API has not answered
        self.quick_failures = 0
        self.quick_limit = 0

    def give_up(self, exc: BaseException) -> bool:
        """For the retry loop: stop now, the quick retries before any answer are spent."""
        return self.quick and self.quick_failures > self.quick_limit

    def on_retry(self, exc: BaseException, wait: float) -> None:
        self._attempts += 1
        wait = self._capped(wait)
        self._skip_next = self._sender.pause_for(self.model, exc, wait, self.sent, self._attempts)

    async def sleep(self, seconds: float) -> None:
        if self._skip_next:
            self._skip_next = False
            return
        await self._sender.retry_sleep(self._capped(seconds))

    def _capped(self, seconds: float) -> float:
        return min(seconds, QUICK_WAIT_S) if self.quick else seconds
