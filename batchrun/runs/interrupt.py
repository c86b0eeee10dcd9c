"""Clean interrupts: the first SIGINT/SIGTERM stops admitting rows and lets in-flight requests
finish (for at most ``grace`` seconds); a second one, or the end of the grace period, cancels
them at once. Either way what was already journaled stays, so the run resumes later.

The final step (writing the final dataset) cannot wind down gently; it is all or nothing, so
under ``stopped_by_signals`` a signal abandons it at once as Ctrl-C does (``StoppedBySignal``),
and a re-run finishes it from the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
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


class StoppedBySignal(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a step that must not be left half done: it was abandoned,
    its temporary files removed, the journal kept. A KeyboardInterrupt, so it stops whatever
    a Ctrl-C stops; ``signal_name`` says which signal it was."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


@contextlib.contextmanager
def stopped_by_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise ``StoppedBySignal`` at once.

    For an all-or-nothing step such as ``Sink.finalize``, which cleans up after itself on
    any exception: without this, SIGTERM kills the process mid-write with no word of how to
    resume, and Ctrl-C under ``asyncio.run`` waits for the step to end, then reports an
    interrupt of a finished run. The caller's handlers are given back after. Where handlers
    cannot be set (not the main thread), the block runs as it is.
    """

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise StoppedBySignal(signal.Signals(signum).name)

    installed: list[tuple[signal.Signals, Any]] = []
    try:
        for sig in SIGNALS:
            try:
                installed.append((sig, signal.signal(sig, on_signal)))
            except ValueError:  # not the main thread
                break
        yield
    finally:
        for sig, previous in reversed(installed):
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
