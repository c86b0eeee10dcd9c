"""A bounded worker pool: at most N items in flight, input pulled only as workers free up.

It knows nothing about HTTP. Items come from a plain iterator, so the input is read exactly
as fast as the workers take it (backpressure) and never piles up in memory. The work
function handles its own per-item failures; an exception that escapes it is a reason to stop
the whole pool (a bad key, a broken output disk), so the pool cancels the rest and re-raises.

    pool = Pool(concurrency=64)
    await pool.run(rows, handle_row)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Pool(Generic[T]):
    """Runs ``work(item)`` over an iterator with at most ``concurrency`` calls in flight."""

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.in_flight = 0
        self._stopping = False

    def stop_admitting(self) -> None:
        """Take no more items; calls already in flight run to their end."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def run(self, items: Iterator[T], work: Callable[[T], Awaitable[None]]) -> None:
        """Run until the items are exhausted, admission stops, or a call raises."""

        async def worker() -> None:
            while not self._stopping:
                # next() runs between awaits, so two workers never read the input at once.
                try:
                    item = next(items)
                except StopIteration:
                    return
                self.in_flight += 1
                try:
                    await work(item)
                finally:
                    self.in_flight -= 1

        tasks = [asyncio.create_task(worker()) for _ in range(self.concurrency)]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            await _cancel_all(tasks)
            raise
        failed = [t for t in done if not t.cancelled() and t.exception() is not None]
        if failed:
            self._stopping = True
            await _cancel_all(list(pending))
            exc = failed[0].exception()
            assert exc is not None
            raise exc


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
