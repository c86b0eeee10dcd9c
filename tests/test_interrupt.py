"""run_interruptibly: the first signal stops admission and lets the work finish; it says so."""

from __future__ import annotations

import asyncio
import os
import signal

from batchrun.drivers.interrupt import run_interruptibly


def test_the_first_signal_says_what_stopping_does_and_lets_the_work_finish() -> None:
    messages: list[str] = []
    stopped: list[bool] = []
    finished: list[bool] = []

    async def work() -> None:
        await asyncio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(0.05)  # the work in flight goes on after the signal
        finished.append(True)

    async def main() -> str | None:
        return await run_interruptibly(
            work(),
            stop_admitting=lambda: stopped.append(True),
            grace=5,
            notify=messages.append,
            stopping="no new batches",
        )

    assert asyncio.run(main()) == "SIGINT"
    assert stopped == finished == [True]
    assert messages == [
        "batchrun: SIGINT: no new batches (at most 5 s). Press Ctrl-C again to stop at once."
    ]
    # The handlers were given back: the default SIGINT handler is Python's again.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
