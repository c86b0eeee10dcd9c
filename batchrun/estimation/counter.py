"""Input tokens counted by the API (``estimate --exact``): paced, retried, deduplicated.

``POST /v1/messages/count_tokens`` is free but has its own requests-per-minute limit
(docs/api-facts.md §9: 100 / 2,000 / 4,000 / 8,000 by tier), separate from message creation. A job
often repeats a request (the same prompt in several rows), so each distinct request is counted
once and the others wait for that answer.

    async with runner.open_client(config) as client:
        counter = TokenCounter(client, rpm=100, max_retries=8)
        tokens = await counter.count(body)   # None when the API refused this request
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from batchrun.client.messages import COUNT_TOKENS_FIELDS, MessagesClient
from batchrun.client.retry import is_fatal, send_with_retries
from batchrun.core.errors import ApiError, FatalRunError
from batchrun.rows.request import request_hash

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

COUNT_RPM = 100
"""count_tokens requests a minute by default: the lowest tier's limit (docs/api-facts.md §9)."""

MAX_DISTINCT_CACHED = 1_000_000  # distinct bodies whose count is remembered (memory bound)


class Pacer:
    """Spaces request starts ``60 / rpm`` seconds apart: a limit of 60 RPM may be enforced as
    one request a second (docs/api-facts.md §7.1), so bursts are avoided rather than retried."""

    def __init__(self, rpm: int, clock: Clock, sleep: Sleep) -> None:
        if rpm < 1:
            raise ValueError("rpm must be at least 1")
        self.gap = 60.0 / rpm
        self._clock = clock
        self._sleep = sleep
        self._next = -math.inf

    async def wait(self) -> None:
        now = self._clock()
        start = max(now, self._next)
        self._next = start + self.gap
        if start > now:
            await self._sleep(start - now)


class TokenCounter:
    """count_tokens for each distinct body, paced, retried; None when the API refuses one."""

    def __init__(
        self,
        client: MessagesClient,
        rpm: int | None,
        max_retries: int,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._client = client
        self._pacer = Pacer(rpm, clock, sleep) if rpm else None
        self._max_retries = max_retries
        self._sleep = sleep
        self._known: dict[str, asyncio.Future[int | None]] = {}
        self.calls = 0
        self.failures = 0
        self.first_error = ""

    async def count(self, body: Mapping[str, Any]) -> int | None:
        key = request_hash({k: v for k, v in body.items() if k in COUNT_TOKENS_FIELDS})
        known = self._known.get(key)
        if known is not None:
            return await asyncio.shield(known)
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        if len(self._known) < MAX_DISTINCT_CACHED:
            self._known[key] = future
        try:
            result = await self._count(body)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it themselves
            raise
        future.set_result(result)
        return result

    async def _count(self, body: Mapping[str, Any]) -> int | None:
        async def once() -> int:
            if self._pacer is not None:
                await self._pacer.wait()
            self.calls += 1
            return await self._client.count_tokens(body)

        try:
            tokens, _ = await send_with_retries(
                once, max_retries=self._max_retries, sleep=self._sleep
            )
        except ApiError as exc:
            if is_fatal(exc):
                raise FatalRunError(f"count_tokens was refused: {exc}") from exc
            self.failures += 1
            self.first_error = self.first_error or str(exc)
            return None
        return tokens
