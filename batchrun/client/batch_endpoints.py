"""The Message Batches endpoints (docs/api-facts.md §8.1) over the run's client, with retries.

Reads (retrieve, list, results) are idempotent and retried like any request. ``create`` is
not: after a reply that may hide a created batch (a timeout, a dropped connection, a 5xx)
retrying could pay for the same rows twice, so ``create`` makes one attempt and says whether
its failure is ``ambiguous``; the caller then looks for the batch before trying again.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from batchrun.client.messages import MessagesClient
from batchrun.client.retry import send_with_retries
from batchrun.core.errors import ApiConnectionError, ApiError, ApiResponseError, ApiTimeoutError
from batchrun.core.jsoncodec import parse
from batchrun.core.timestamps import parse_rfc3339

BATCHES_PATH = "/v1/messages/batches"
LIST_PAGE = 100  # the API allows up to 1,000 per page; older versions 100
COUNT_NAMES = ("processing", "succeeded", "errored", "canceled", "expired")
ENDED = "ended"

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class BatchStatus:
    """The fields of a ``MessageBatch`` that batchrun acts on."""

    id: str
    processing_status: str
    counts: dict[str, int]
    created_at: datetime
    ended_at: datetime | None
    expires_at: datetime | None

    @property
    def ended(self) -> bool:
        return self.processing_status == ENDED

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> BatchStatus:
        try:
            counts = data.get("request_counts") or {}
            return cls(
                id=str(data["id"]),
                processing_status=str(data["processing_status"]),
                counts={name: int(counts.get(name) or 0) for name in COUNT_NAMES},
                created_at=parse_rfc3339(data["created_at"]),
                ended_at=parse_rfc3339(data["ended_at"]) if data.get("ended_at") else None,
                expires_at=parse_rfc3339(data["expires_at"]) if data.get("expires_at") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiResponseError(
                f"unusable MessageBatch object: {exc!r}", error_type="malformed_response"
            ) from exc


@dataclass(frozen=True)
class Upload:
    """A request body read as it is sent, never whole in memory: its size in bytes, and
    ``slices`` giving it afresh, a slice at a time, for each attempt."""

    size: int
    slices: Callable[[], AsyncIterator[bytes]]


def is_ambiguous(exc: ApiError) -> bool:
    """True when a failed create may still have created the batch."""
    if isinstance(exc, (ApiConnectionError, ApiTimeoutError)):
        return True
    return exc.status is None or (exc.status >= 500 and exc.status != 529)


class BatchesApi:
    """create / retrieve / list / cancel / results for one run."""

    def __init__(
        self, client: MessagesClient, *, max_retries: int, sleep: Sleep = asyncio.sleep
    ) -> None:
        self._client = client
        self._max_retries = max_retries
        self._sleep = sleep

    async def create(self, content: bytes | Upload) -> BatchStatus:
        """One attempt; see the module docstring for why it is never retried here."""
        if isinstance(content, Upload):
            data = await self._client.call_json(
                "POST", BATCHES_PATH, content=content.slices(), content_length=content.size
            )
        else:
            data = await self._client.call_json("POST", BATCHES_PATH, content=content)
        return BatchStatus.from_api(data)

    async def retrieve(self, batch_id: str) -> BatchStatus:
        return await self._retried(
            lambda: self._client.call_json("GET", f"{BATCHES_PATH}/{batch_id}"),
            BatchStatus.from_api,
        )

    async def cancel(self, batch_id: str) -> BatchStatus:
        """Cancelling twice is harmless, so this retries like a read."""
        return await self._retried(
            lambda: self._client.call_json("POST", f"{BATCHES_PATH}/{batch_id}/cancel"),
            BatchStatus.from_api,
        )

    async def created_since(self, since: datetime) -> list[BatchStatus]:
        """Every batch created at or after ``since``, newest first (pages while needed)."""
        found: list[BatchStatus] = []
        after: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": LIST_PAGE}
            if after is not None:
                params["after_id"] = after
            page = await self._retried(
                functools.partial(self._client.call_json, "GET", BATCHES_PATH, params=params),
                lambda data: data,
            )
            batches = [BatchStatus.from_api(item) for item in page.get("data") or []]
            found += [b for b in batches if b.created_at >= since]
            if not page.get("has_more") or not batches or batches[-1].created_at < since:
                return found
            after = str(page.get("last_id") or batches[-1].id)

    async def results(self, batch_id: str) -> AsyncIterator[dict[str, Any]]:
        """The batch's result lines, parsed, as they stream in (in no particular order).

        Built from our own base URL rather than the batch's ``results_url``, so the
        credentials only ever go where the user pointed them.
        """
        async for line in self._client.lines(f"{BATCHES_PATH}/{batch_id}/results"):
            try:
                record = parse(line)
            except ValueError as exc:
                raise ApiResponseError(
                    f"batch {batch_id}: a results line is not JSON",
                    error_type="malformed_response",
                ) from exc
            if isinstance(record, dict):
                yield record

    async def _retried(
        self,
        call: Callable[[], Awaitable[dict[str, Any]]],
        parse: Callable[[dict[str, Any]], T],
    ) -> T:
        async def attempt() -> T:
            return parse(await call())

        value, _ = await send_with_retries(
            attempt, max_retries=self._max_retries, sleep=self._sleep
        )
        return value
