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
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Generic, TypeVar

T = TypeVar("T")

# ``Pool.stand_aside``, handed to what makes an item wait for another (engine.warmup, .dedup).
StandAside = Callable[[], AbstractAsyncContextManager[None]]


class Stopped(Exception):
    """Admission stopped while an item stood aside: it is neither sent nor recorded."""


class Pool(Generic[T]):
    """Runs ``work(item)`` over an iterator with at most ``concurrency`` calls in flight."""

    def __init__(self, concurrency: int, *, aside: int = 0) -> None:
        """``aside``: how many items may wait outside the limit (``stand_aside``) at once."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.aside_room = max(0, aside)
        self.limit = concurrency  # in flight at most; set_limit() lowers it below concurrency
        self.in_flight = 0
        self._stopping = False
        self._waiting: list[asyncio.Future[None]] = []  # workers held back by the limit
        # Of those, the ones holding an item back from standing aside (first in ``_waiting``).
        self._returning: set[asyncio.Future[None]] = set()
        self._on_stop: list[Callable[[], None]] = []

    def set_limit(self, limit: int) -> None:
        """Allow ``limit`` calls in flight from now on (1..concurrency), e.g. tuned at run time.

        Lowering it lets calls in flight finish; raising it wakes idle workers at once.
        """
        self.limit = max(1, min(limit, self.concurrency))
        self._wake(len(self._waiting))

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when admission stops, e.g. to release calls waiting elsewhere."""
        self._on_stop.append(callback)

    def stop_admitting(self) -> None:
        """Take no more items; calls already in flight run to their end."""
        first = not self._stopping
        self._stopping = True
        self._wake(len(self._waiting))
        if first:
            for callback in self._on_stop:
                callback()

    def _wake(self, count: int) -> None:
        while count > 0 and self._waiting:
            waiter = self._waiting.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    async def _room(self, *, first: bool = False) -> None:
        """Wait until a call finishes or the limit rises; ``first`` goes ahead of the queue."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if first:
            self._waiting.insert(0, waiter)
            self._returning.add(waiter)
        else:
            self._waiting.append(waiter)
        try:
            await waiter
        finally:
            self._returning.discard(waiter)
            if waiter in self._waiting:
                self._waiting.remove(waiter)

    @property
    def stopping(self) -> bool:
        return self._stopping

    @contextlib.asynccontextmanager
    async def stand_aside(self) -> AsyncIterator[None]:
        """Inside, the calling item does not count as in flight: it waits for something else
        (its cache prefix to be written, the twin request it will copy) while another item
        takes its place. On the way out it waits for room again, ahead of new items.

        Only ``aside`` items can stand aside at once: the pool runs that many workers beyond
        ``concurrency``, and an item standing aside holds one of them, which bounds what is
        read ahead of the rows being sent.
        """
        self.in_flight -= 1
        if self._waiting:
            self._wake(1)
        try:
            yield
        finally:
            while self.in_flight >= self.limit and not self._stopping:
                await self._room(first=True)
            self.in_flight += 1

    async def run(self, items: Iterator[T], work: Callable[[T], Awaitable[None]]) -> None:
        """Run until the items are exhausted, admission stops, or a call raises."""
        exhausted = False
        first_failure: list[BaseException] = []  # what the first call to raise raised

        def note_failure(task: asyncio.Task[None]) -> None:
            # A task's done callbacks run in the order they were added, so this runs before
            # asyncio.wait below learns of the same task.
            failure = None if task.cancelled() else task.exception()
            if failure is not None and not first_failure:
                first_failure.append(failure)

        async def worker() -> None:
            nonlocal exhausted
            while not self._stopping:
                if self.in_flight >= self.limit:  # a worker beyond the limit, or after set_limit()
                    await self._room()
                    continue
                # next() runs between awaits, so two workers never read the input at once.
                try:
                    item = next(items)
                except StopIteration:
                    exhausted = True
                    self._wake(len(self._waiting))  # they too must see the end and return
                    return
                self.in_flight += 1
                handed_over = False
                try:
                    await work(item)
                except BaseException:
                    # The pool stops: a worker woken below must not read another item.
                    self._stopping = True
                    raise
                finally:
                    self.in_flight -= 1
                    if self._waiting and self._waiting[0] in self._returning:
                        self._wake(1)
                        handed_over = True
                if handed_over:
                    # Let the one woken take the slot before this worker reads a new item:
                    # an item back from standing aside goes ahead of the input. A worker
                    # waiting with no item is not woken for the slot: this one reads the
                    # next item itself, which spares a wake-up and a turn of the event
                    # loop per item (with ``aside`` room, as many workers wait as run).
                    await asyncio.sleep(0)

        tasks: list[asyncio.Task[None]] = []
        try:
            for _ in range(self.concurrency + self.aside_room):
                if self._stopping or exhausted or first_failure:
                    break  # a worker started now would find nothing to do, or must not
                tasks.append(asyncio.create_task(worker()))
                tasks[-1].add_done_callback(note_failure)
                # One new worker per turn of the event loop, so the first items' I/O goes on
                # while later workers start. All at once, every worker's first step (for an
                # HTTP request with a new connection, ~0.5 ms) ran before any socket was
                # served: with 1,024 workers nothing was sent for 0.5 s, then the answers came
                # back as one burst that queued (bench/concurrency.py: batchrun went from
                # ~72% to ~85% of the ideal rate). Once a call has raised, no more start.
                await asyncio.sleep(0)
            if not tasks:
                return
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            await _cancel_all(tasks)
            raise
        if first_failure:
            self._stopping = True
            await _cancel_all(list(pending))
            raise first_failure[0]


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
