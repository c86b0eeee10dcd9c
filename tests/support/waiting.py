"""Waiting in tests for something another thread or process does: poll a condition until it
holds, bounded by a timeout (a bound on how long to wait, never a timing assertion)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterable
from typing import Any

POLL_S = 0.01


def wait_until(
    condition: Callable[[], object],
    timeout: float,
    what: str,
    *,
    alive: Iterable[subprocess.Popen[Any]] = (),
    every: float = POLL_S,
) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout`` seconds, or
    at once, with what it printed, when a process in ``alive`` has ended meanwhile."""
    watched = list(alive)
    deadline = time.monotonic() + timeout
    while not condition():
        _check(deadline, timeout, what, watched)
        time.sleep(every)


async def wait_until_async(
    condition: Callable[[], object], timeout: float, what: str, *, every: float = 0.005
) -> None:
    """``wait_until`` inside an event loop: it sleeps without holding the loop up."""
    deadline = time.monotonic() + timeout
    while not condition():
        _check(deadline, timeout, what, [])
        await asyncio.sleep(every)


def _check(deadline: float, timeout: float, what: str, alive: list[subprocess.Popen[Any]]) -> None:
    for proc in alive:
        assert proc.poll() is None, (
            f"waiting for {what}: {proc.args!r} ended with {proc.returncode}",
            proc.communicate(),
        )
    assert time.monotonic() < deadline, f"waited {timeout:g} s for {what} in vain"
