"""Clean interrupts: the first SIGINT/SIGTERM stops admitting rows and lets in-flight requests
finish (for at most ``grace`` seconds); a second one, or the end of the grace period, cancels
them at once. Either way what was already journaled stays, so the run resumes later.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def run_interruptibly(
    work: Awaitable[None],
    *,
    stop_admitting: Callable[[], None],
    grace: float,
    notify: Callable[[str], None],
    stopping: str = "no new rows; finishing requests in flight",
) -> str | None:
    """Await ``work``; return the name of the signal that interrupted it, or None.

    ``stopping`` tells the user what the first signal does.
    Where signal handlers cannot be installed (not the main thread, Windows), ``work`` just
    runs and Ctrl-C behaves as Python's default.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    received: list[str] = []
    timers: list[asyncio.TimerHandle] = []

    def on_signal(name: str) -> None:
        received.append(name)
        if len(received) == 1:
            stop_admitting()
            notify(
                f"batchrun: {name}: {stopping} (at most {grace:g} s). "
                "Press Ctrl-C again to stop at once."
            )
            timers.append(loop.call_later(grace, task.cancel))
        else:
            notify(f"batchrun: {name} again: stopping now.")
            task.cancel()

    installed: list[tuple[signal.Signals, Any]] = []
    for sig in SIGNALS:
        previous = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
            installed.append((sig, previous))
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        await task
    except asyncio.CancelledError:
        if not received or not task.cancelled():
            raise  # cancelled from outside, not by a signal of ours
    finally:
        for timer in timers:
            timer.cancel()
        for sig, previous in installed:
            loop.remove_signal_handler(sig)
            # remove_signal_handler resets to the default; a library must give back the
            # caller's own handler (a benchmark's, a test runner's) instead.
            if previous is not None:
                signal.signal(sig, previous)
    return received[0] if received else None
