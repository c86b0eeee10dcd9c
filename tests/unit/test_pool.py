"""The pool with no HTTP: bound, backpressure, isolation of failures, stopping."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from batchrun.engine.pool import Pool


def test_never_more_than_concurrency_in_flight_and_every_item_done() -> None:
    in_flight = 0
    peak = 0
    done: list[int] = []

    async def work(i: int) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        in_flight -= 1
        done.append(i)

    asyncio.run(Pool[int](7).run(iter(range(100)), work))
    assert peak == 7
    assert sorted(done) == list(range(100))


def test_input_is_read_only_as_fast_as_workers_take_it() -> None:
    read = 0
    started: list[int] = []
    release = asyncio.Event

    def items() -> Iterator[int]:
        nonlocal read
        for i in range(1000):
            read += 1
            yield i

    async def main() -> None:
        gate = release()

        async def work(i: int) -> None:
            started.append(i)
            await gate.wait()

        task = asyncio.create_task(Pool[int](4).run(items(), work))
        for _ in range(10):
            await asyncio.sleep(0)
        # Four workers hold one item each; nothing more has been read from the input.
        assert read == 4
        assert started == [0, 1, 2, 3]
        gate.set()
        await task

    asyncio.run(main())
    assert read == 1000


def test_workers_start_one_turn_of_the_event_loop_apart() -> None:
    # With hundreds of workers, the first item's I/O must not wait for all of them to start.
    events: list[str] = []

    async def work(i: int) -> None:
        events.append(f"start {i}")
        await asyncio.sleep(0)
        events.append(f"resumed {i}")

    asyncio.run(Pool[int](3).run(iter(range(3)), work))
    assert events.index("resumed 0") < events.index("start 2")
    assert sorted(events) == sorted(
        [f"{what} {i}" for i in range(3) for what in ("start", "resumed")]
    )


def test_stop_admitting_lets_in_flight_items_finish() -> None:
    finished: list[int] = []

    async def main() -> None:
        pool = Pool[int](3)

        async def work(i: int) -> None:
            if i == 4:
                pool.stop_admitting()
            await asyncio.sleep(0)
            finished.append(i)

        await pool.run(iter(range(100)), work)

    asyncio.run(main())
    assert 4 in finished
    assert len(finished) < 10


def test_an_escaping_error_cancels_the_rest_and_is_raised() -> None:
    waiting = cancelled = 0

    async def work(i: int) -> None:
        nonlocal waiting, cancelled
        if i == 5:
            raise RuntimeError("disk on fire")
        waiting += 1
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled += 1
            raise

    with pytest.raises(RuntimeError, match="disk on fire"):
        asyncio.run(Pool[int](8).run(iter(range(100)), work))
    # Every call in flight is cancelled; at most one more worker started after the failure.
    assert 5 <= cancelled == waiting <= 6


def test_an_error_while_workers_are_starting_stops_the_pool_at_once() -> None:
    started_after_failure = 0
    failed = False

    async def work(i: int) -> None:
        nonlocal failed, started_after_failure
        started_after_failure += failed
        if i == 0:
            failed = True
            raise RuntimeError("bad key")
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="bad key"):
        asyncio.run(Pool[int](50).run(iter(range(10_000)), work))
    # No worker starts once a call has raised (50 would); the few already running may each
    # take one more item before the pool cancels them.
    assert started_after_failure < 10


def test_concurrency_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Pool[int](0)
